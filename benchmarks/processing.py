"""CPU time and SQL statements per event of the processing path, in-process.

Sends N events of each kind (new, update, duplicate, stale) through the endpoint with Django's
test client, and the same kinds straight to ``process_event`` (what processing alone costs), and
reports ``time.process_time()`` per event and statements per event (on SQLite these include the
transaction's BEGIN, which Django sends as a statement; psycopg sends PostgreSQL's itself). CPU
time, not wall time: the machine it runs on is shared, and CPU time is what a worker spends.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mw_perfsql \\
        python -m benchmarks.processing [--events 300] [--rounds 3] [--profile new]

``--profile`` prints a cProfile of CPU time (``BENCH_SORT=tottime`` sorts it by own time).

Without DATABASE_URL it runs on SQLite (in memory). It creates and drops the test database
(``test_<name>``) as the test suite does.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from itertools import count

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from morph_webhooks.apply import process_event  # noqa: E402
from morph_webhooks.models import Connection, WebhookDelivery  # noqa: E402
from morph_webhooks.parsing import parse_event  # noqa: E402
from morph_webhooks.testing import morph_headers, opportunity_event, post_event  # noqa: E402

T0 = datetime(2025, 3, 6, 9, 0, tzinfo=timezone.utc)
SCENARIOS = ("new", "update", "duplicate", "stale")


class Events:
    """Payloads and keys for each scenario; every call gives a fresh one."""

    # One numbering for the whole run: every round's new events are new.
    serial = count()

    def __init__(self) -> None:
        self.stored: list[str] = []  # remote ids stored at T0 + 1 minute, for updates and stale ones
        self.sent: list[tuple[dict[str, object], str]] = []  # (payload, key) already processed

    def new(self) -> tuple[dict[str, object], str]:
        n = next(self.serial)
        payload = opportunity_event("created", f"opp_{n}", updated_at=T0 + timedelta(minutes=1))
        self.stored.append(f"opp_{n}")
        self.sent.append((payload, f"key_{n}"))
        return payload, f"key_{n}"

    def update(self) -> tuple[dict[str, object], str]:
        n = next(self.serial)
        remote_id = self.stored.pop()
        return opportunity_event("updated", remote_id, updated_at=T0 + timedelta(minutes=2)), f"key_{n}"

    def stale(self) -> tuple[dict[str, object], str]:
        n = next(self.serial)
        return opportunity_event("updated", self.stored[n % len(self.stored)], updated_at=T0), f"key_{n}"

    def duplicate(self) -> tuple[dict[str, object], str]:
        return self.sent.pop()


def through_view(client: Client) -> Callable[[dict[str, object], str], None]:
    def send(payload: dict[str, object], key: str) -> None:
        response = post_event(client, payload, headers=morph_headers(key))
        assert response.status_code == 200, response.content

    return send


def through_processing() -> Callable[[dict[str, object], str], None]:
    import json

    def send(payload: dict[str, object], key: str) -> None:
        headers = morph_headers(key)
        body = json.dumps(payload).encode()
        event = parse_event(headers, body)
        delivery = WebhookDelivery.received(
            "127.0.0.1", "/webhooks/morph/", headers, headers["x-conector-id"]
        )
        delivery.record_body(body, body.decode())
        delivery.identify(event)
        process_event(event, delivery)

    return send


def measure(
    send: Callable[[dict[str, object], str], None], events: Events, n: int, profile: str | None
) -> Iterator[tuple[str, float, float]]:
    # Stored first, so that updates, stale events and duplicates have something to act on.
    order = ["new", "stale", "duplicate", "update"]
    for scenario in order:
        make = getattr(events, scenario)
        batch = [make() for _ in range(n)]
        profiler = cProfile.Profile(time.process_time) if scenario == profile else None
        # Counted by a wrapper, not by Django's query log: that would format every statement.
        statements = Counted()
        with connection.execute_wrapper(statements):
            if profiler:
                profiler.enable()
            started = time.process_time()
            for payload, key in batch:
                send(payload, key)
            elapsed = time.process_time() - started
            if profiler:
                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats(
                    os.environ.get("BENCH_SORT", "cumulative")
                ).print_stats(40)
        yield scenario, elapsed / n * 1000, statements.count / n


class Counted:
    def __init__(self) -> None:
        self.count = 0

    def __call__(
        self, execute: Callable[..., object], sql: str, params: object, many: bool, context: object
    ) -> object:
        self.count += 1
        return execute(sql, params, many, context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300, help="events per scenario and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=SCENARIOS, help="print a cProfile of this scenario (last round)")
    args = parser.parse_args()

    setup_test_environment()
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        headers = morph_headers()
        Connection.register(headers["x-conector-id"], headers["x-owner-id"])
        results: dict[tuple[str, str], list[float]] = {}
        statements: dict[tuple[str, str], float] = {}
        for round_ in range(args.rounds):
            last = round_ == args.rounds - 1
            for path, send in (("view", through_view(Client())), ("process_event", through_processing())):
                for scenario, ms, per_event in measure(
                    send, Events(), args.events, last and args.profile or None
                ):
                    results.setdefault((path, scenario), []).append(ms)
                    statements[(path, scenario)] = per_event
        print(f"{connection.vendor}, {args.events} events per scenario, {args.rounds} rounds")
        print(f"{'path':<14} {'scenario':<10} {'CPU ms/event':>12} {'(min)':>7} {'statements':>10}")
        for (path, scenario), values in results.items():
            # The median, and the least: what another process's load on the machine added least to.
            print(
                f"{path:<14} {scenario:<10} {statistics.median(values):>12.3f} {min(values):>7.3f}"
                f" {statements[(path, scenario)]:>10.2f}"
            )
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


if __name__ == "__main__":
    main()
