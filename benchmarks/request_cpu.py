#!/usr/bin/env python
"""The CPU one request costs in this process: the app's endpoint against the two yardsticks.

    .venv/bin/python benchmarks/request_cpu.py [--database postgres|sqlite] [--events 2000]
        [--rounds 3] [--scenario new|mixed|duplicate|naive|bare|view|deferred|deliveries ...]
        [--log-warning]
        [--profile FILE]
        [--top 30]

No server and no client: each request is a prepared WSGI environ handed to the project's WSGI
handler (``benchmarks.settings``: the example's middleware, persistent connections), so the figure
is the Python the request runs, plus the database's client side, without the noise of a shared
machine's other processes. ``time.process_time()`` counts this process's CPU only: the
database server's own work is not in it (wall time is shown beside it).

Scenarios: ``new`` (every event a new opportunity), ``mixed`` (70% new, 20% updates, 10% re-sends,
as ``benchmarks/lua/events.lua``), ``duplicate`` (re-sends of stored events), and the yardsticks
``naive`` (the hand-written receiver, new events) and ``bare`` (a view that does nothing); and
``view``: the app's endpoint with new events and ``process_event`` replaced by a stub, i.e. what
a request costs besides processing (DRF, authentication, validation, the request log's row
built but not saved, the answer, the log line); ``deferred``: the app's endpoint with new events in
deferred mode (``PROCESSING = "deferred"`` on the example's task backend, django-tasks-db's
DatabaseBackend), no worker running: authenticate, validate, claim the key, record the delivery
and enqueue its task; ``deliveries``: the same with ``QUEUE = "deliveries"``, which enqueues no task.
The app logs as ``benchmarks.settings`` has it (the example's logging: its INFO line per request),
to /dev/null; ``--log-warning`` keeps only its warnings, leaving that line out.
Rounds interleave the scenarios; the table shows each one's least and median CPU per request over
rounds. ``--profile FILE`` runs the first scenario's first round under cProfile (left out of the
table) and prints the top by cumulative time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `python benchmarks/request_cpu.py` puts benchmarks/ first on the path, where its modules would
# pass for top-level ones; the checkout's root is what belongs there.
if Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)

from benchmarks import harness  # noqa: E402
from benchmarks.harness import RESULTS, fresh_database, migrate, secrets_env  # noqa: E402

STAGES = ("appointmentscheduled", "qualifiedtobuy", "contractsent", "closedwon", "closedlost")


def setup_django(database_url: str) -> str:
    """Django set up on a migrated ``database_url``; return the webhook secret."""
    env = secrets_env()
    harness.setup_django(
        {"DJANGO_SETTINGS_MODULE": "benchmarks.settings", **env, "BENCH_DATABASE_URL": database_url}
    )
    migrate()
    return env["MORPH_WEBHOOKS_SECRET"]


class Events:
    """Bodies shaped like ``benchmarks/lua/events.lua``'s, each with its own key."""

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce
        self.count = 0
        self.sent: list[tuple[str, bytes]] = []  # (key, body) of every request so far
        self.opportunities: list[tuple[str, int]] = []  # (id, seconds of its last updatedAt)

    def _body(self, action: str, remote_id: str, seconds: int) -> bytes:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1735689600 + seconds))
        data = {
            "object": "resource",
            "model": "crmOpportunity",
            "id": remote_id,
            "fields": {
                "name": f"Deal {remote_id}",
                "amount": random.randint(1, 100000),
                "currency": random.choice(("EUR", "USD", "GBP")),
                "stage": {"object": "resourceRef", "model": "crmStage", "id": random.choice(STAGES)},
                "pipeline": {"object": "resourceRef", "model": "crmPipeline", "id": "pipeline_sales"},
                "owner": {"object": "resourceRef", "model": "genericUser", "id": "user_1"},
                "contacts": [{"object": "resourceRef", "model": "genericContact", "id": "contact_1"}],
                "companies": [{"object": "resourceRef", "model": "genericCompany", "id": "company_1"}],
                "engagements": [],
            },
            "createdAt": f"{stamp}.000Z",
            "updatedAt": f"{stamp}.{random.randint(0, 999):03d}Z",
            "rawResource": None,
            "warnings": [],
        }
        return json.dumps({"event": f"crmOpportunity::{action}", "data": data}).encode()

    def new(self) -> tuple[str, bytes]:
        self.count += 1
        remote_id = f"opp_{self.nonce}_{self.count}"
        self.opportunities.append((remote_id, self.count))
        return self._send(self._body("created", remote_id, self.count))

    def update(self) -> tuple[str, bytes]:
        self.count += 1
        index = random.randrange(len(self.opportunities))
        remote_id, _ = self.opportunities[index]
        self.opportunities[index] = (remote_id, self.count)
        return self._send(self._body("updated", remote_id, self.count))

    def resend(self) -> tuple[str, bytes]:
        return random.choice(self.sent)

    def _send(self, body: bytes) -> tuple[str, bytes]:
        key = f"key_{self.nonce}_{len(self.sent)}"
        self.sent.append((key, body))
        return key, body

    def mixed(self) -> tuple[str, bytes]:
        roll = random.random()
        if roll < 0.7 or len(self.sent) < 10:
            return self.new()
        return self.update() if roll < 0.9 else self.resend()


def environ(path: str, token: str, key: str, body: bytes, owner: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": f"token={token}",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "morph-webhooks",
        "HTTP_ACCEPT": "*/*",
        "HTTP_X_CONECTOR_ID": "hubspot",
        "HTTP_X_OWNER_ID": owner,
        "HTTP_X_IDEMPOTENCY_KEY": key,
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def requests(scenario: str, token: str, count: int, nonce: str) -> Iterator[dict[str, Any]]:
    events = Events(nonce)
    path = {"naive": "/bench/naive/", "bare": "/bench/bare/"}.get(scenario, "/webhooks/morph/")
    if scenario == "duplicate":
        # Store the events first (not timed), then send them again.
        originals = [events.new() for _ in range(count)]
        yield from (environ(path, token, key, body, "tenant_1") for key, body in originals)
        yield from (environ(path, token, key, body, "tenant_1") for key, body in originals)
        return
    make: Callable[[], tuple[str, bytes]] = events.mixed if scenario == "mixed" else events.new
    for _ in range(count):
        key, body = make()
        yield environ(path, token, key, body, "tenant_1")


def mode(scenario: str) -> Any:
    """How the endpoint runs for ``scenario``: ``view`` with processing (the database's part)
    replaced by a stub, ``deferred`` in deferred mode, the others as configured (sync mode)."""
    from unittest import mock

    from django.conf import settings
    from django.test import override_settings

    from morph_webhooks.apply import Result
    from morph_webhooks.models import Outcome

    if scenario == "view":
        return mock.patch("morph_webhooks.apply.process_event", return_value=Result(Outcome.PROCESSED))
    if scenario == "deferred":
        return override_settings(MORPH_WEBHOOKS={**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred"})
    if scenario == "deliveries":
        return override_settings(
            MORPH_WEBHOOKS={**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
        )
    return contextlib.nullcontext()


def run(application: Any, environs: list[dict[str, Any]], expect: set[int]) -> tuple[float, float]:
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    cpu, wall = time.process_time(), time.perf_counter()
    for env in environs:
        response = application(env, start_response)
        for _ in response:
            pass
        response.close()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    codes = {int(status.split()[0]) for status in statuses}
    if not codes <= expect:
        raise SystemExit(f"unexpected answers: {sorted(codes)}")
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--database-name", default="morph_webhooks_cpu", help="dropped and created")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--scenario",
        nargs="+",
        default=["new", "mixed", "duplicate", "naive", "bare", "view", "deferred", "deliveries"],
        choices=["new", "mixed", "duplicate", "naive", "bare", "view", "deferred", "deliveries"],
    )
    parser.add_argument("--log-warning", action="store_true")
    parser.add_argument("--profile", metavar="FILE")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    token = setup_django(
        fresh_database(args.database, args.database_name, RESULTS / f"{args.database_name}.sqlite3")
    )
    from django.core.wsgi import get_wsgi_application

    # get_wsgi_application() sets Django up again, logging included.
    application = get_wsgi_application()
    # The example's logging, as benchmarks.settings keeps it (the INFO line per request, through
    # its formatter and RedactToken filter), written to /dev/null rather than to this terminal.
    devnull = open(os.devnull, "w")  # noqa: SIM115
    for name in ("morph_webhooks", "django"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(devnull)
    if args.log_warning:
        logging.getLogger("morph_webhooks").setLevel(logging.WARNING)
    random.seed(1)
    for _, env in zip(range(args.warmup), requests("mixed", token, args.warmup, "warm"), strict=False):
        run(application, [env], {200})
    if {"deferred", "deliveries"} & set(args.scenario):
        # Deferred mode's first requests load the task framework and its backend.
        with mode("deferred"):
            run(application, list(requests("deferred", token, args.warmup // 4, "warmdeferred")), {200})
    print(f"{args.database}: {args.rounds} rounds of {args.events} requests per scenario, per request:")
    cpu_times: dict[str, list[float]] = {scenario: [] for scenario in args.scenario}
    wall_times: dict[str, list[float]] = {scenario: [] for scenario in args.scenario}
    # Rounds interleave the scenarios, so that another process's burst hits them all alike.
    for round_number in range(args.rounds):
        for index, scenario in enumerate(args.scenario):
            environs = list(requests(scenario, token, args.events, f"{scenario}{secrets.token_hex(4)}"))
            if scenario == "duplicate":
                run(application, environs[: args.events], {200})
                environs = environs[args.events :]
            # Timed in CPU, as the table: waiting for the database is no cost of this process.
            profiled = args.profile and index == 0 and round_number == 0
            profiler = cProfile.Profile(time.process_time) if profiled else None
            if profiler:
                profiler.enable()
            with mode(scenario):
                cpu, wall = run(application, environs, {200})
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
                continue  # the profiler's overhead is not the request's
            cpu_times[scenario].append(cpu / len(environs) * 1e6)
            wall_times[scenario].append(wall / len(environs) * 1e6)
    for scenario in args.scenario:
        cpu_list, wall_list = sorted(cpu_times[scenario]), wall_times[scenario]
        if not cpu_list:
            continue
        print(
            f"  {scenario:10} cpu min {cpu_list[0]:6.0f} µs  median {statistics.median(cpu_list):6.0f} µs"
            f"   wall median {statistics.median(wall_list):6.0f} µs"
        )
    if args.profile:
        stream = io.StringIO()
        pstats.Stats(args.profile, stream=stream).sort_stats("cumulative").print_stats(args.top)
        print(stream.getvalue())


if __name__ == "__main__":
    main()
