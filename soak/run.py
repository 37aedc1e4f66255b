"""Soak test: the example project under gunicorn on PostgreSQL, flooded with Morph events.

    .venv/bin/python soak/run.py [--events 10000] [--workers 4] [--senders 16] [--seed 1]

Drops and recreates the database ``morph_webhooks_soak``, migrates it, starts gunicorn on a free
port of 127.0.0.1, sends the events of ``soak/plan.py`` (re-sends, shuffled order) from concurrent
senders, stops gunicorn, then checks the database against the plan (``soak/verify.py``) and
prints a report. Exits with status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# `python soak/run.py` puts soak/ first on the path, where settings.py and wsgi.py would pass for
# top-level modules; the checkout's root is what belongs there.
if Path(sys.path[0]).resolve() == ROOT / "soak":
    sys.path[0] = str(ROOT)

from benchmarks.harness import HOST, Gunicorn, migrate, recreate_database, secrets_env, setup_django  # noqa: E402

if TYPE_CHECKING:
    from soak.plan import Event, Plan
    from soak.verify import Answer, Verification

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/morph_webhooks_soak"
ENDPOINT = "/webhooks/morph/"
# Generous: a request that takes this long is a finding, and reported as an error.
REQUEST_TIMEOUT = 60
STARTUP_TIMEOUT = 60
# How many distinct errors of failed deliveries to print.
SHOWN_ERRORS = 5


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment(args)
    # This process migrates and verifies with the same settings as the server.
    setup_django(env)
    from django.db import connections

    from soak.plan import SCOPES, build_plan
    from soak.verify import verify

    plan = build_plan(
        args.events, seed=args.seed, duplicate_ratio=args.duplicates, opportunities=args.opportunities
    )
    print(
        f"Soak test: {len(plan.sends):,} events ({len(plan.events):,} distinct, {plan.resends:,} re-sent "
        f"with the same key), {len(plan.expected):,} opportunities in {len(SCOPES)} (connector, owner) "
        f"scopes, seed {args.seed}"
    )
    print(
        f"Server: gunicorn ({args.settings}), {args.workers} workers x {args.threads} thread(s), PostgreSQL "
        f"{_safe_url(args.database_url)}, CONN_MAX_AGE={args.conn_max_age}; {args.senders} concurrent senders"
    )

    recreate_database(args.database_url)
    migrate()

    log_dir = Path(tempfile.mkdtemp(prefix="morph-webhooks-soak-"))
    log_path = log_dir / "gunicorn.log"
    path = f"{ENDPOINT}?token={quote(env['MORPH_WEBHOOKS_SECRET'])}"
    answers: list[list[Answer]] = [[] for _ in plan.sends]
    with serve(args, env, log_path) as server:
        port = server.port
        print(f"Sending to http://{HOST}:{port}{ENDPOINT} ...", flush=True)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        for position, answer in send(plan, range(len(plan.sends)), port, path, args.senders).items():
            answers[position].append(answer)
        seconds = time.monotonic() - started
        load = (load_before, os.getloadavg()[0])
        main_pass = [attempts[0] for attempts in answers]
        retried = retry_failures(plan, answers, port, path, args)
    log = server.problems()

    verification = verify(plan, answers)
    connections.close_all()
    report(plan, answers, main_pass, started, seconds, load, retried, verification, log, log_path)
    if verification.ok and not log:
        # Nothing to look at: do not leave a directory behind in /tmp for every run.
        log_path.unlink()
        log_dir.rmdir()
    return 0 if verification.ok and not log else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000, help="requests to send, re-sends included")
    parser.add_argument("--duplicates", type=float, default=0.3, help="share of re-sends (default 0.3)")
    parser.add_argument("--opportunities", type=int, help="default: events / 10")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (>1: gthread workers)")
    parser.add_argument("--senders", type=int, default=16, help="concurrent client connections")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--settings",
        default="soak.settings",
        help="settings module of every process (default soak.settings); a variant should import it",
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="rounds of re-delivery after a failure, as Morph"
    )
    # Persistent connections, as a gunicorn deployment would have: 0 (a new connection per
    # request) makes the run about three times slower.
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=60,
        help="seconds a worker keeps its DB connection (default 60; 0: one per request)",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="the database to DROP and recreate; its name must contain 'soak'",
    )
    args = parser.parse_args(argv)
    # Dropping a database is only safe if it obviously belongs to this script.
    if "soak" not in urlsplit(args.database_url).path:
        parser.error("--database-url: the database is dropped at each run, so its name must contain 'soak'")
    return args


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment of every process of the run: one secret and one database for all."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": args.settings,
        "DJANGO_DEBUG": "0",
        **secrets_env(),
        "SOAK_DATABASE_URL": args.database_url,
        "SOAK_CONN_MAX_AGE": str(args.conn_max_age),
        # gunicorn imports soak.wsgi from the checkout (neither soak nor example_project is installed).
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def serve(args: argparse.Namespace, env: dict[str, str], log_path: Path) -> Gunicorn:
    """``soak.wsgi`` under gunicorn, answering once every worker has booted."""
    return Gunicorn(
        "soak.wsgi:application",
        workers=args.workers,
        env=env,
        log_path=log_path,
        options=[
            f"--threads={args.threads}",
            f"--timeout={REQUEST_TIMEOUT}",
            "--graceful-timeout=20",
            # INFO: worker boots, timeouts and crashes are logged. No access log: Morph's secret is
            # in the query string, which gunicorn's access log would write down.
            "--log-level=info",
        ],
        # The site's root only redirects to the admin: no database access, nothing recorded.
        probe="/",
        startup_timeout=STARTUP_TIMEOUT,
    )


def send(plan: Plan, positions: Iterable[int], port: int, path: str, senders: int) -> dict[int, Answer]:
    """Send ``plan.sends[p]`` for every ``p`` in ``positions`` from ``senders`` threads, each with
    its own connection, and return every answer by position."""
    from soak.verify import Answer

    positions = list(positions)
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for position in positions:
        work.put(position)
    results: list[list[tuple[int, Answer]]] = [[] for _ in range(senders)]

    def sender(out: list[tuple[int, Answer]]) -> None:
        # http.client keeps the connection open when the server allows it (gthread workers) and
        # reconnects by itself after a "Connection: close" (sync workers).
        connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
        try:
            while True:
                try:
                    position = work.get_nowait()
                except queue.Empty:
                    return
                out.append((position, post(connection, path, plan.events[plan.sends[position]])))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=sender, args=(out,), name=f"sender-{n}") for n, out in enumerate(results)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answers = dict(answer for out in results for answer in out)
    # A sender that crashed (its traceback is printed) left its request unanswered: an error.
    return {position: answers.get(position, Answer(0, "sender thread failed", 0.0)) for position in positions}


def post(connection: http.client.HTTPConnection, path: str, event: Event) -> Answer:
    from soak.verify import Answer

    started = time.perf_counter()
    try:
        connection.request(
            "POST", path, body=event.body, headers={"Content-Type": "application/json", **event.headers}
        )
        response = connection.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        # No answer: whether the server applied the event is unknown, which a re-delivery settles.
        connection.close()
        return Answer(0, type(exc).__name__, time.perf_counter() - started, time.monotonic())
    seconds = time.perf_counter() - started
    try:
        body = json.loads(data)
        outcome = str(body.get("status") or body.get("error") or "")
    except (ValueError, AttributeError):
        outcome = f"unreadable answer {data[:80]!r}"
    return Answer(response.status, outcome, seconds, time.monotonic())


def retry_failures(
    plan: Plan, answers: list[list[Answer]], port: int, path: str, args: argparse.Namespace
) -> int:
    """Re-send what failed, as Morph would, so that the final state can still be checked; the
    failures themselves stay counted. Returns how many requests were re-sent."""
    retried = 0
    for _ in range(args.retries):
        failed = [
            position for position, attempts in enumerate(answers) if not attempts or not attempts[-1].ok
        ]
        if not failed:
            break
        time.sleep(1)
        retried += len(failed)
        for position, answer in send(plan, failed, port, path, args.senders).items():
            answers[position].append(answer)
    return retried


def report(
    plan: Plan,
    answers: list[list[Answer]],
    main_pass: list[Answer],
    started: float,
    seconds: float,
    load: tuple[float, float],
    retried: int,
    verification: Verification,
    log: list[str],
    log_path: Path,
) -> None:
    attempts = [attempt for attempts_of_one in answers for attempt in attempts_of_one]
    outcomes = Counter(attempt.outcome for attempt in attempts if attempt.ok)
    errors = [attempt for attempt in attempts if not attempt.ok]
    server_errors = sum(1 for attempt in errors if attempt.http_status >= 500)
    no_answer = sum(1 for attempt in errors if not attempt.http_status)
    latencies = sorted(answer.seconds * 1000 for answer in main_pass)
    centiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    signals = verification.signals
    once = verification.max_signals_per_key <= 1 and all(
        check.ok for check in verification.checks if check.name.startswith("one signal")
    )

    print(
        f"Sent {len(main_pass):,} requests in {seconds:.1f} s: {len(main_pass) / seconds:.0f} requests/s; latency "
        f"p50 {centiles[49]:.0f} ms, p95 {centiles[94]:.0f} ms, p99 {centiles[98]:.0f} ms, max {latencies[-1]:.0f} ms"
    )
    print(
        f"Requests/s by tenth of the run: {throughput_by_tenth(main_pass, started)}; "
        f"load average {load[0]:.1f} before, {load[1]:.1f} after ({os.cpu_count()} CPUs: other work on the "
        "machine slows the run down)"
    )
    if retried:
        print(f"Re-sent {retried:,} failed requests (as Morph retries); all attempts are counted below.")
    print()
    rows = [
        ("events sent", f"{len(plan.sends):,}", f"{len(plan.events):,} distinct + {plan.resends:,} re-sends"),
        ("applied", f"{outcomes['processed']:,}", 'answered "processed"'),
        ("duplicates", f"{outcomes['duplicate']:,}", f"expected {plan.resends:,}"),
        ("stale", f"{outcomes['stale']:,}", "older than the stored version; depends on arrival order"),
        ("ignored", f"{outcomes['ignored']:,}", f"expected {plan.ignored:,} (telephonyCall events)"),
        (
            "errors",
            f"{len(errors):,}",
            f"5xx {server_errors:,}, no answer {no_answer:,}, other {len(errors) - server_errors - no_answer:,}",
        ),
        (
            "signals fired",
            f"{sum(signals.values()):,}",
            f"created {signals['opportunity_created']:,}, updated {signals['opportunity_updated']:,}, "
            f"deleted {signals['opportunity_deleted']:,}; each exactly once: {'yes' if once else 'NO'}",
        ),
    ]
    for name, value, note in rows:
        print(f"  {name:<14} {value:>7}   {note}")
    if errors:
        print(
            f"  errors by answer: {dict(Counter(f'HTTP {e.http_status} {e.outcome}' for e in errors).most_common())}"
        )
    if verification.failed_deliveries:
        print(
            f"  failed deliveries by error: {dict(verification.failed_deliveries.most_common(SHOWN_ERRORS))}"
        )
    print()
    for check in verification.checks:
        print(f"  {'PASS' if check.ok else 'FAIL'}  {check.name}")
        for failure in check.failures:
            print(f"          {failure}")
        if check.count > len(check.failures):
            print(f"          ... {check.count - len(check.failures):,} more")
    db = verification.database
    workers = sorted(verification.signals_per_worker.values(), reverse=True)
    print()
    print(
        f"PostgreSQL: {db['commits']:,} commits, {db['rollbacks']:,} rollbacks (retried collisions and failures), "
        f"{db['deadlocks']:,} deadlocks. Signals per gunicorn worker: {workers}"
    )
    if log:
        print(f"Server log: {len(log):,} warning/error lines in {log_path}, first ones:")
        for line in log[:10]:
            print(f"    {line[:300]}")
    else:
        print("Server log: no warnings or errors.")
    ok = verification.ok and not log
    print()
    print("RESULT: " + ("PASS: zero lost, zero doubled, zero 5xx." if ok else "FAIL (see above)."))


def throughput_by_tenth(main_pass: list[Answer], started: float) -> list[int]:
    """Requests/s over each tenth of the run: a steady decline would mean the app slows down as
    its tables grow; a dip, that something else wanted the CPU."""
    finished = sorted(answer.finished for answer in main_pass)
    size = max(1, len(finished) // 10)
    rates = []
    for index in range(0, len(finished), size):
        chunk = finished[index : index + size]
        begin = finished[index - 1] if index else started
        rates.append(round(len(chunk) / max(chunk[-1] - begin, 1e-9)))
    return rates


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    # A password in the URL is not for the terminal.
    netloc = parts.netloc.rpartition("@")[2] if parts.password else parts.netloc
    return urlunsplit(parts._replace(netloc=netloc))


if __name__ == "__main__":
    sys.exit(main())
