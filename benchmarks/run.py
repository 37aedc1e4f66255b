#!/usr/bin/env python
"""Benchmark morph_webhooks under gunicorn against two yardsticks, every row of the targets in one command.

    .venv/bin/python benchmarks/run.py [--rounds 3] [--duration 10] [--workers 2] [--connections 16]
        [--database postgres|sqlite] [--no-deferred] [--queues tasks,deliveries] [--no-sqlite]
        [--preload 1000000] [--admin] [--memory-events 100000]

A run, with the defaults (about 12 minutes on 2 cores):

1. A fresh PostgreSQL database, migrated; gunicorn (sync workers, fixed count) serving
   ``benchmarks.settings`` on 127.0.0.1, the app in sync mode; a warm-up. In each round, wrk
   against ``bare`` (a Django view that answers 200 and does nothing: the stack's limit), the
   hand-written receiver (``benchmarks/yardsticks.py``, "naive") and the app's endpoint, each with
   ``new`` events (only new opportunities), ``mixed`` (70% new, 20% updates, 10% re-sends) and
   ``resend`` (only re-sends of keys each endpoint has already handled: its duplicate path).
2. Deferred mode, for each of its queues: the same server restarted with ``PROCESSING =
   "deferred"``; rounds of the hand-written receiver and the app's endpoint with new events, no
   worker running, so the endpoint alone is timed and its backlog piles up. Then one worker drains
   that backlog alone, and its rate is compared with the sync-mode app's requests per second per
   gunicorn worker: ``QUEUE = "tasks"`` on the database task backend (the example project's),
   drained by ``db_worker --batch``; ``QUEUE = "deliveries"``, drained by
   ``morph_webhooks_worker --batch``.
3. The same as 1 on SQLite, new events only: this script run again with ``--database sqlite``.

Rounds interleave the scenarios so that drift (autovacuum, checkpoints, a noisy neighbour) hits
them all alike; the figures are medians over rounds. The app logs its INFO line per request, as
the example project deployed does. After every wrk run the answers are checked: the app's from its
own request log, the hand-written receiver's from what it stored, the worker's drain from every
delivery's final status and every task's: a fast run of 400s would prove nothing, and any wrong
answer makes the script exit 1. Then each row of the targets table is printed with its target and
stretch, met or not.

``--preload N`` then stores N opportunities, N keys and N deliveries (server-side INSERT ... SELECT)
and measures the app again; ``--admin`` times the admin's changelists on that data;
``--memory-events N`` sends N mixed events and samples each worker's RSS.
Results go to ``benchmarks/results/latest.json`` and, as a table ready for the README with the
machine it ran on, ``benchmarks/results/latest.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
LUA = BENCH / "lua" / "events.lua"
BIN = Path(sys.executable).parent

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
SQLITE_PATH = RESULTS / "bench.sqlite3"

APP_PATH = "/webhooks/morph/"
NAIVE_PATH = "/bench/naive/"
BARE_PATH = "/bench/bare/"

# What the app may answer in each kind of run, as its request log records it ("status http").
PROCESSED = frozenset({"processed 200"})
# Mixed: an update overtaking its create under load (the create then loses to it) is answered
# stale, as it should be.
PROCESSED_DUPLICATE_OR_STALE = frozenset({"processed 200", "duplicate 200", "stale 200"})
DUPLICATE = frozenset({"duplicate 200"})
QUEUED = frozenset({"queued 200"})


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    mode: str  # events.lua's mode: new, mixed or resend
    answers: frozenset[str] = frozenset()  # the app's allowed answers; empty for the yardsticks


# Interleaved in this order in every round.
SCENARIOS = [
    Scenario("bare", BARE_PATH, "new"),
    Scenario("naive new", NAIVE_PATH, "new"),
    Scenario("app new", APP_PATH, "new", PROCESSED),
    Scenario("naive mixed", NAIVE_PATH, "mixed"),
    Scenario("app mixed", APP_PATH, "mixed", PROCESSED_DUPLICATE_OR_STALE),
    Scenario("naive resend", NAIVE_PATH, "resend"),
    Scenario("app resend", APP_PATH, "resend", DUPLICATE),
]
DEFERRED_SCENARIOS = [
    Scenario("naive new", NAIVE_PATH, "new"),
    Scenario("app deferred", APP_PATH, "new", QUEUED),
]
# The SQLite run (step 3) and its row of the table.
SQLITE_SCENARIOS = ["naive new", "app new"]

# Re-sends: this many events, delivered once to each endpoint before the rounds, then re-sent.
RESEND_EVENTS = 1000


def log(message: str) -> None:
    print(message, flush=True)


# --- Tools ----------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk not found: installing the Debian package (apt-get install -y wrk)")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet).returncode != 0:
        # A fresh container has no package lists yet.
        subprocess.run(["apt-get", "update"], check=True, **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, **quiet)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is still not on PATH after apt-get install wrk")
    return found


def ensure_gunicorn() -> str:
    gunicorn = BIN / "gunicorn"
    if not gunicorn.exists():
        log("gunicorn not found in the virtual environment: pip install gunicorn")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "gunicorn"], check=True)
    return str(gunicorn)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- Database -------------------------------------------------------------------------------------


def fresh_database(kind: str, name: str) -> str:
    """Drop and create the benchmark database; return its URL."""
    if kind == "sqlite":
        RESULTS.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{SQLITE_PATH}"
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_SERVER}/{name}"


def setup_django(args: argparse.Namespace, database_url: str) -> dict[str, str]:
    """Configure this process as gunicorn's workers will be; return their environment."""
    env = {
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "MORPH_WEBHOOKS_SECRET": secrets.token_urlsafe(32),
        "BENCH_DATABASE_URL": database_url,
        "BENCH_CONN_MAX_AGE": str(args.conn_max_age),
        "BENCH_STAGE_HISTORY": "1" if args.stage_history else "0",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    return dict(os.environ)


def migrate() -> None:
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0, interactive=False)
    connections.close_all()


def db_vendor() -> str:
    from django.db import connection

    return connection.vendor


def postgres_version() -> str:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres") as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "unknown"


def delivery_cursor() -> int:
    from morph_webhooks.models import WebhookDelivery

    last = WebhookDelivery.objects.order_by("-pk").values_list("pk", flat=True).first()
    return last or 0


def outcomes_since(pk: int) -> dict[str, int]:
    """What the app answered after delivery ``pk``, read back from its own request log."""
    from django.db import connections
    from django.db.models import Count

    from morph_webhooks.models import WebhookDelivery

    rows = (
        WebhookDelivery.objects.filter(pk__gt=pk)
        .values_list("status", "http_status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = {f"{status} {http_status}": n for status, http_status, n in rows}
    connections.close_all()
    return counts


def task_counts() -> dict[str, int]:
    """The database task backend's tasks, by status."""
    from django.db import connections
    from django.db.models import Count
    from django_tasks_db.models import DBTaskResult

    rows = DBTaskResult.objects.values_list("status").annotate(n=Count("pk")).order_by()
    counts = {str(status): n for status, n in rows}
    connections.close_all()
    return counts


def naive_counts() -> dict[str, int]:
    from django.db import connections

    from benchmarks.naive.models import Deal, SeenKey

    counts = {"keys": SeenKey.objects.count(), "deals": Deal.objects.count()}
    connections.close_all()
    return counts


# --- gunicorn -------------------------------------------------------------------------------------


class Server:
    def __init__(self, gunicorn: str, workers: int, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        # One run's log only, so that what problems() finds belongs to this run.
        self.log_file = log_path.open("w")
        self.process = subprocess.Popen(
            [
                gunicorn,
                "benchmarks.wsgi:application",
                "--workers",
                str(workers),
                "--worker-class",
                "sync",
                "--bind",
                f"127.0.0.1:{self.port}",
                # wrk's connections queue here while both workers are busy; the default (2048)
                # is spelt out because a short backlog would turn queueing into connect errors.
                "--backlog",
                "2048",
                "--timeout",
                "120",
            ],
            cwd=ROOT,
            env=env,
            # gunicorn's own log and the project's console logging (warnings and errors of the app
            # and of django.request) both go to stderr: keep them together in one file.
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}{BARE_PATH}", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"gunicorn did not start; see {log_path}")
            time.sleep(0.2)

    def workers(self) -> list[int]:
        """The master's children, found through /proc (no dependency on psutil)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Field 4 (ppid) follows the command name, which is in parentheses and may hold spaces.
            if int(stat.rpartition(")")[2].split()[1]) == self.process.pid:
                pids.append(int(entry.name))
        return sorted(pids)

    def problems(self) -> list[str]:
        """gunicorn's and the app's warnings and errors (worker timeouts, 5xx, tracebacks)."""
        if not self.log_path.exists():
            return []
        markers = ("WARNING", "ERROR", "CRITICAL", "Traceback")
        return [line for line in self.log_path.read_text().splitlines() if any(m in line for m in markers)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# --- wrk ------------------------------------------------------------------------------------------


def wrk_command(
    args: argparse.Namespace, url: str, mode: str, duration: float, resends: Path | None = None
) -> list[str]:
    per_thread = max(1, args.connections // args.threads)
    # Updates and re-sends reach back further than any request still in flight (see events.lua).
    min_age = max(64, 4 * per_thread)
    return [
        args.wrk,
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        "10s",
        # The latency distribution (p50 to p99.999), printed next to the script's own summary.
        "--latency",
        "-s",
        str(LUA),
        url,
        "--",
        mode,
        secrets.token_hex(6),
        str(min_age),
        *([str(resends)] if resends else []),
    ]


def parse_wrk(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            seconds = data["duration_us"] / 1e6
            data["rps"] = data["requests"] / seconds if seconds else 0.0
            data["p50_ms"] = data["p50_us"] / 1000
            data["p99_ms"] = data["p99_us"] / 1000
            return data
    raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{output}")


def run_wrk(
    args: argparse.Namespace, url: str, mode: str, duration: float, resends: Path | None = None
) -> dict[str, Any]:
    done = subprocess.run(
        wrk_command(args, url, mode, duration, resends), capture_output=True, text=True, check=True
    )
    return parse_wrk(done.stdout)


def url_for(server: Server, path: str, token: str) -> str:
    # Both the app and the hand-written receiver read the secret from the URL, as Morph sends it.
    return f"{server.base}{path}" if path == BARE_PATH else f"{server.base}{path}?token={token}"


def post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **headers}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answered: dict[str, Any] = json.loads(answer.read())
        return answered


def smoke_test(server: Server, token: str, app_answer: str) -> None:
    """One request to each endpoint with the testing helpers' body: fail early and clearly."""
    from morph_webhooks.testing import morph_headers, opportunity_event

    for path, expected in ((APP_PATH, app_answer), (NAIVE_PATH, "processed")):
        # Its own opportunity each time: another server's smoke test must not make it stale.
        body = json.dumps(opportunity_event(remote_id=f"smoke-{secrets.token_hex(6)}")).encode()
        answered = post(url_for(server, path, token), body, morph_headers())
        if answered != {"status": expected}:
            sys.exit(f"{path} answered {answered}")


def warm_up(args: argparse.Namespace, server: Server, token: str, scenarios: list[Scenario]) -> None:
    # Imports, caches, connections and the first pages of each table in place before timing.
    for path in dict.fromkeys(scenario.path for scenario in scenarios):
        run_wrk(args, url_for(server, path, token), "new", 3)
        drain(path)


def measure(
    args: argparse.Namespace,
    server: Server,
    token: str,
    scenarios: list[Scenario],
    problems: list[str],
    resends: Path | None = None,
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {scenario.name: [] for scenario in scenarios}
    for round_number in range(1, args.rounds + 1):
        for scenario in scenarios:
            path = scenario.path
            before = delivery_cursor() if path == APP_PATH else 0
            naive_before = naive_counts() if path == NAIVE_PATH else {}
            result = run_wrk(args, url_for(server, path, token), scenario.mode, args.duration, resends)
            drain(path)
            if path == APP_PATH:
                result["outcomes"] = outcomes_since(before)
            elif path == NAIVE_PATH:
                after = naive_counts()
                result["stored"] = {key: after[key] - naive_before[key] for key in after}
            result["load"] = load()
            result["problems"] = wrong_answers(scenario, result)
            problems.extend(
                f"round {round_number} {scenario.name}: {problem}" for problem in result["problems"]
            )
            runs[scenario.name].append(result)
            errors = {kind: n for kind, n in result["errors"].items() if n}
            log(
                f"  round {round_number} {scenario.name:<13}{result['rps']:8.1f} req/s  "
                f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms"
                + (f"  errors {errors}" if errors else "")
                + (f"  {result['outcomes']}" if "outcomes" in result else "")
                + (f"  stored {result['stored']}" if "stored" in result else "")
                + f"  load {result['load']}"
                + "".join(f"\n    WRONG: {problem}" for problem in result["problems"])
            )
    return runs


def wrong_answers(scenario: Scenario, result: dict[str, Any]) -> list[str]:
    """What shows that a run did not do its work: wrk's errors (non-2xx answers, timeouts), an
    answer the app should not give here, or fewer requests logged or stored than answered."""
    problems = [f"wrk counted {n} {kind} errors" for kind, n in result["errors"].items() if n]
    answered = result["requests"]
    if scenario.path == APP_PATH:
        outcomes: dict[str, int] = result["outcomes"]
        unexpected = {outcome: n for outcome, n in outcomes.items() if outcome not in scenario.answers}
        if unexpected:
            problems.append(f"the app answered {unexpected}, expected only {sorted(scenario.answers)}")
        # Requests still queued in gunicorn when wrk stopped are logged too: at least as many.
        if sum(outcomes.values()) < answered:
            problems.append(f"{answered} requests answered, {sum(outcomes.values())} in the request log")
    elif scenario.path == NAIVE_PATH:
        keys, deals = result["stored"]["keys"], result["stored"]["deals"]
        if scenario.mode == "new" and not (keys >= answered and deals == keys):
            problems.append(f"{answered} new events answered, {keys} keys and {deals} deals stored")
        if scenario.mode == "mixed" and not (
            keys >= answered - result["generated"]["resends"] and deals <= keys
        ):
            problems.append(f"{answered} mixed events answered, {keys} keys and {deals} deals stored")
        if scenario.mode == "resend" and (keys or deals):
            problems.append(f"re-sends stored {keys} keys and {deals} deals, expected none")
    return problems


def drain(path: str) -> None:
    """Wait for the requests still queued in gunicorn when wrk stopped: they are answered after
    wrk's report, and would otherwise be counted in (and slow down) the next scenario."""

    def progress() -> object:
        if path == APP_PATH:
            return delivery_cursor()
        return naive_counts() if path == NAIVE_PATH else None

    last, deadline = progress(), time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = progress()
        if current == last:
            return
        last = current


def medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            metric: statistics.median(run[metric] for run in results)
            for metric in ("rps", "p50_ms", "p99_ms")
        }
        for name, results in runs.items()
        if results
    }


def print_table(title: str, figures: dict[str, dict[str, float]]) -> None:
    log(f"\n{title}")
    log(f"  {'scenario':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, figure in figures.items():
        log(f"  {name:<14}{figure['rps']:>10.1f}{figure['p50_ms']:>10.2f}{figure['p99_ms']:>10.2f}")


# --- Re-sends -------------------------------------------------------------------------------------


def prepare_resends(args: argparse.Namespace, server: Server, token: str, path: Path) -> Path:
    """Write RESEND_EVENTS events for events.lua's ``resend`` mode and deliver each once to the
    app and to the hand-written receiver: every request of the timed runs is then a re-send of a
    key the endpoint has handled, which takes its duplicate path."""
    nonce = secrets.token_hex(6)
    lines, events = [], []
    for i in range(RESEND_EVENTS):
        updated_at = f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000Z"
        body = json.dumps(
            {
                "event": "crmOpportunity::created",
                "data": {
                    "object": "resource",
                    "model": "crmOpportunity",
                    "id": f"resend-{nonce}-{i}",
                    "fields": {
                        "name": f"Deal resend-{nonce}-{i}",
                        "amount": 1000 + i,
                        "currency": "EUR",
                        "stage": {"object": "resourceRef", "model": "crmStage", "id": "qualifiedtobuy"},
                        "pipeline": {"object": "resourceRef", "model": "crmPipeline", "id": "pipeline_sales"},
                        "owner": {"object": "resourceRef", "model": "genericUser", "id": f"user_{i % 50}"},
                        "contacts": [
                            {"object": "resourceRef", "model": "genericContact", "id": f"contact_{i}"}
                        ],
                        "companies": [
                            {"object": "resourceRef", "model": "genericCompany", "id": f"company_{i}"}
                        ],
                        "engagements": [],
                    },
                    "createdAt": updated_at,
                    "updatedAt": updated_at,
                    "rawResource": None,
                    "warnings": [],
                },
            },
            separators=(",", ":"),
        )
        headers = {
            "x-conector-id": ("hubspot", "salesforce", "pipedrive")[i % 3],
            "x-owner-id": ("tenant_1", "tenant_2")[i % 2],
            "x-idempotency-key": f"resend-{nonce}-{i}-{secrets.token_hex(8)}",
        }
        events.append((body.encode(), headers))
        lines.append(
            "\t".join([headers["x-idempotency-key"], headers["x-conector-id"], headers["x-owner-id"], body])
        )
    path.write_text("\n".join(lines) + "\n")

    def deliver(target: str, event: tuple[bytes, dict[str, str]]) -> Any:
        return post(url_for(server, target, token), *event).get("status")

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers * 2) as pool:
        for target in (APP_PATH, NAIVE_PATH):
            answers = set(pool.map(lambda event, target=target: deliver(target, event), events))
            if answers != {"processed"}:
                sys.exit(f"Delivering the events to re-send: {target} answered {answers}")
    log(f"{RESEND_EVENTS} events to re-send delivered once to the app and to the hand-written receiver")
    return path


# --- Deferred mode --------------------------------------------------------------------------------


# Deferred mode's queues (the setting QUEUE) and the worker that drains each.
WORKERS = {
    "tasks": ["db_worker", "--batch", "--no-startup-delay"],
    "deliveries": ["morph_webhooks_worker", "--batch"],
}


def measure_deferred(
    args: argparse.Namespace, gunicorn: str, env: dict[str, str], token: str, problems: list[str], queue: str
) -> dict[str, Any]:
    """The endpoint in deferred mode on ``queue`` with no worker running, then one worker draining
    the backlog."""
    deferred_env = {**env, "MORPH_WEBHOOKS_PROCESSING": "deferred", "MORPH_WEBHOOKS_QUEUE": queue}
    before = delivery_cursor()
    server = Server(gunicorn, args.workers, deferred_env, RESULTS / f"gunicorn-deferred-{queue}.log")
    log(f"\nDeferred mode, QUEUE = {queue!r}, endpoint only (no worker running): gunicorn on {server.base}")
    try:
        smoke_test(server, token, "queued")
        warm_up(args, server, token, DEFERRED_SCENARIOS)
        runs = measure(args, server, token, DEFERRED_SCENARIOS, problems)
    finally:
        server.stop()
    figures = medians(runs)
    print_table(f"Medians of {args.rounds} rounds, deferred mode, QUEUE = {queue!r}", figures)
    result: dict[str, Any] = {"runs": runs, "medians": figures, "server_problems": server.problems()}
    problems.extend(f"deferred server log: {line}" for line in result["server_problems"])
    result["worker"] = drain_backlog(deferred_env, before, problems, queue)
    return result


def drain_backlog(env: dict[str, str], before: int, problems: list[str], queue: str) -> dict[str, Any]:
    """One worker (``db_worker --batch``, or ``morph_webhooks_worker --batch`` for the deliveries
    queue) applies every queued delivery and exits; nothing else runs."""
    from django.db import connections
    from django.db.models import Count, Max, Min

    from morph_webhooks.models import WebhookDelivery

    backlog = WebhookDelivery.objects.filter(pk__gt=before, status="queued").count()
    tasks_before = task_counts()
    if connections["default"].vendor == "postgresql":
        # What autovacuum would have done after tens of thousands of inserts (it analyses a table
        # once a tenth of it changed). Where it is off, as on some benchmark machines, the planner
        # has no statistics for the task table, and the worker's "next ready task" query sorts the
        # whole backlog for every task instead of reading the backend's partial index.
        with connections["default"].cursor() as cursor:
            cursor.execute("ANALYZE")
    command = WORKERS[queue]
    log(f"\nOne worker ({' '.join(command)}) applying the backlog of {backlog} queued deliveries")
    log_path = RESULTS / f"{command[0]}.log"
    started = time.monotonic()
    with log_path.open("w") as worker_log:
        worker = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    wall = time.monotonic() - started
    drained = WebhookDelivery.objects.filter(pk__gt=before)
    outcomes = {
        f"{status} {http}": n
        for status, http, n in drained.values_list("status", "http_status").annotate(n=Count("pk")).order_by()
    }
    span = drained.filter(processed_at__isnull=False).aggregate(
        first=Min("processed_at"), last=Max("processed_at")
    )
    tasks = task_counts()
    connections.close_all()
    processed = outcomes.get("processed 200", 0)
    # From the first delivery applied to the last: the worker's rate, without its start-up.
    seconds = (span["last"] - span["first"]).total_seconds() if span["first"] else 0.0
    rate = (processed - 1) / seconds if seconds and processed > 1 else 0.0
    result = {
        "backlog": backlog,
        "outcomes": outcomes,
        "tasks_before": tasks_before,
        "tasks": tasks,
        "exit_code": worker.returncode,
        "wall_seconds": wall,
        "processing_seconds": seconds,
        "deliveries_per_second": rate,
    }
    wrong = []
    if worker.returncode:
        wrong.append(f"{command[0]} exited with {worker.returncode}; see {log_path}")
    if outcomes != {"processed 200": backlog}:
        wrong.append(f"{backlog} deliveries were queued, and after the worker: {outcomes}")
    if queue == "tasks" and set(tasks) != {"SUCCESSFUL"}:
        wrong.append(f"tasks not all successful: {tasks}")
    if queue == "deliveries" and tasks != tasks_before:
        wrong.append(f"the deliveries queue enqueued tasks: {tasks_before} before, {tasks} after")
    problems.extend(f"worker: {problem}" for problem in wrong)
    result["problems"] = wrong
    log(
        f"  {processed} applied in {seconds:.1f} s: {rate:.1f} deliveries/s "
        f"(the worker ran {wall:.1f} s with its start-up); deliveries {outcomes}, tasks {tasks}"
        + "".join(f"\n    WRONG: {problem}" for problem in wrong)
    )
    return result


# --- Targets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    scenario: str
    app: float
    yardstick: float
    unit: str
    target: float
    stretch: float | None
    at_most: bool = False  # latency: lower is better

    @property
    def ratio(self) -> float:
        return self.app / self.yardstick if self.yardstick else 0.0

    def meets(self, bound: float | None) -> bool | None:
        if bound is None:
            return None
        return self.ratio <= bound if self.at_most else self.ratio >= bound

    def bound(self, value: float | None) -> str:
        return "" if value is None else f"{'<=' if self.at_most else '>='} {value:.1f}x"

    def verdict(self) -> str:
        if not self.meets(self.target):
            return "not met"
        return "stretch met" if self.meets(self.stretch) else "met"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "app": self.app,
            "yardstick": self.yardstick,
            "unit": self.unit,
            "ratio": self.ratio,
            "target": self.bound(self.target),
            "stretch": self.bound(self.stretch),
            "met": self.meets(self.target),
            "stretch_met": self.meets(self.stretch),
        }


def targets(report: dict[str, Any], workers: int) -> list[Target]:
    """The rows of issue 11's table that this run measured."""
    rows = []
    main: dict[str, dict[str, float]] = report.get("empty", {}).get("medians", {})
    postgres = report["machine"]["database"] == "postgresql"
    sqlite = main if not postgres else report.get("sqlite", {}).get("empty", {}).get("medians", {})

    def rps(figures: dict[str, dict[str, float]], name: str) -> float:
        # NaN for a scenario left out (--scenarios): its rows are left out of the table below.
        return figures.get(name, {}).get("rps", math.nan)

    if postgres and main:
        rows += [
            Target(
                "new events, sync mode, app / hand-written",
                rps(main, "app new"),
                rps(main, "naive new"),
                "req/s",
                1.0,
                1.5,
            ),
            Target(
                "mixed 70/20/10, app / hand-written",
                rps(main, "app mixed"),
                rps(main, "naive mixed"),
                "req/s",
                1.0,
                1.5,
            ),
            Target(
                "re-sent events, app / hand-written's duplicate path",
                rps(main, "app resend"),
                rps(main, "naive resend"),
                "req/s",
                1.5,
                2.0,
            ),
        ]
    for queue, deferred in (report.get("deferred", {}) if postgres else {}).items():
        figures = deferred["medians"]
        rows.append(
            Target(
                f"deferred mode ({queue}), endpoint only, app / hand-written",
                rps(figures, "app deferred"),
                rps(figures, "naive new"),
                "req/s",
                1.5,
                2.0,
            )
        )
        if main:
            rows.append(
                Target(
                    f"deferred mode ({queue}), one worker: deliveries/s / sync-mode app req/s per worker",
                    deferred["worker"]["deliveries_per_second"],
                    rps(main, "app new") / workers,
                    "/s",
                    1.0,
                    None,
                )
            )
    if postgres and main:
        for kind in ("new", "mixed"):
            rows.append(
                Target(
                    f"p99 latency, {kind}, app / hand-written",
                    main.get(f"app {kind}", {}).get("p99_ms", math.nan),
                    main.get(f"naive {kind}", {}).get("p99_ms", math.nan),
                    "ms",
                    1.0,
                    0.7,
                    at_most=True,
                )
            )
    if "app new" in sqlite and "naive new" in sqlite:
        rows.append(
            Target(
                "SQLite, new events, app / hand-written",
                rps(sqlite, "app new"),
                rps(sqlite, "naive new"),
                "req/s",
                1.0,
                None,
            )
        )
    return [row for row in rows if not (math.isnan(row.app) or math.isnan(row.yardstick))]


def print_targets(rows: list[Target], rounds: int) -> None:
    width = max(len(row.scenario) for row in rows) + 2
    log(f"\nTargets (issue 11): medians of {rounds} rounds")
    log(
        f"  {'scenario':<{width}}{'app':>14}{'compared with':>15}{'ratio':>8}{'target':>10}{'stretch':>10}  verdict"
    )
    for row in rows:
        log(
            f"  {row.scenario:<{width}}{row.app:>8.1f} {row.unit:<5}{row.yardstick:>9.1f} {row.unit:<5}"
            f"{row.ratio:>7.2f}x{row.bound(row.target):>10}{row.bound(row.stretch):>10}  {row.verdict()}"
        )


def markdown(report: dict[str, Any], rows: list[Target]) -> str:
    machine, settings = report["machine"], report["settings"]
    lines = [
        f"Measured {machine['date']} on {machine['cores']} cores ({machine['cpu']}), Python "
        f"{machine['python']}, Django {machine['django']}, "
        + (f"PostgreSQL {machine['postgresql']}, " if machine["postgresql"] else "")
        + f"SQLite {machine['sqlite']}; gunicorn with {settings['workers']} sync workers, wrk with "
        f"{settings['connections']} connections, medians of {settings['rounds']} rounds of "
        f"{settings['duration']:g} s (`benchmarks/run.py`).",
        "",
        "| scenario | app | compared with | ratio | target | stretch | |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.scenario} | {row.app:,.1f} {row.unit} | {row.yardstick:,.1f} {row.unit} | "
            f"{row.ratio:.2f}x | {row.bound(row.target)} | {row.bound(row.stretch)} | {row.verdict()} |"
        )
    return "\n".join(lines) + "\n"


# --- Preloaded data -------------------------------------------------------------------------------

CONNECTORS = ["hubspot", "salesforce", "pipedrive"]
OWNERS = ["tenant_1", "tenant_2"]
STAGES = [
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
]


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{value}'" for value in values) + "]"


def preload_postgres(count: int) -> None:
    """N rows per table, generated by PostgreSQL itself: nothing crosses the socket, so 1,000,000
    rows of each take a minute or two instead of the ten a Python loop would.

    One opportunity in 50 is deleted and one delivery in 100 was rejected, so the admin's filters
    have something to find; ``updatedAt`` runs over the year 2024, one row every 20 seconds.
    """
    from django.db import connection

    from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery

    # i -> (connector, owner) repeats the same six tenants in a fixed pattern.
    common = f"""
        FROM generate_series(1, {int(count)}) AS i,
        LATERAL (SELECT
            ({_array(CONNECTORS)})[1 + i % 3] AS connector,
            ({_array(OWNERS)})[1 + (i / 3) % 2] AS owner,
            timestamptz '2024-01-01 00:00:00+00' + i * interval '20 seconds' AS ts
        ) AS v
    """
    statements = [
        f"""
        INSERT INTO {Opportunity._meta.db_table} (
            connector_id, owner_id, remote_id, name, amount, currency, stage_id, pipeline_id,
            crm_owner_id, contact_ids, company_ids, engagement_ids, extra_fields, raw_resource,
            warnings, remote_created_at, remote_updated_at, deleted_at, created_at, updated_at)
        SELECT connector, owner, 'pre_' || i, 'Preloaded deal ' || i, (i % 100000) * 12.5, 'EUR',
            ({_array(STAGES)})[1 + i % 7], 'pipeline_sales', 'user_' || (i % 50),
            jsonb_build_array('contact_' || (i % 5000)), jsonb_build_array('company_' || (i % 2000)),
            '[]'::jsonb, '{{}}'::jsonb, NULL, '[]'::jsonb, ts - interval '1 day', ts,
            CASE WHEN i % 50 = 0 THEN ts END, ts, ts
        {common}
        """,
        f"""
        INSERT INTO {IdempotencyKey._meta.db_table} (
            connector_id, owner_id, key, event, remote_id, outcome, deliveries, first_seen_at,
            last_seen_at)
        SELECT connector, owner, 'pre-key-' || i, 'crmOpportunity::created', 'pre_' || i,
            'processed', 1, ts, ts
        {common}
        """,
        f"""
        INSERT INTO {WebhookDelivery._meta.db_table} (
            received_at, remote_addr, path, headers, body, connector_id, owner_id, idempotency_key,
            event, remote_id, status, http_status, error, attempts, processed_at)
        SELECT ts, '127.0.0.1', '/webhooks/morph/',
            jsonb_build_object('content-type', 'application/json', 'x-conector-id', connector,
                'x-owner-id', owner, 'x-idempotency-key', 'pre-key-' || i),
            format('{{"event": "crmOpportunity::created", "data": {{"object": "resource", '
                '"model": "crmOpportunity", "id": "pre_%s", "fields": {{"name": "Preloaded deal %s", '
                '"amount": %s, "currency": "EUR", "stage": {{"object": "resourceRef", '
                '"model": "crmStage", "id": "qualifiedtobuy"}}, "contacts": [], "companies": [], '
                '"engagements": []}}, "createdAt": "%s", "updatedAt": "%s", "rawResource": null, '
                '"warnings": []}}}}', i, i, (i % 100000) * 12.5,
                to_char(ts - interval '1 day', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
            connector, owner, 'pre-key-' || i, 'crmOpportunity::created', 'pre_' || i,
            CASE WHEN i % 100 = 0 THEN 'rejected' ELSE 'processed' END,
            CASE WHEN i % 100 = 0 THEN 400 ELSE 200 END,
            CASE WHEN i % 100 = 0 THEN '{{"error": "invalid_event"}}' ELSE '' END,
            1, CASE WHEN i % 100 = 0 THEN NULL ELSE ts END
        {common}
        """,
    ]
    with connection.cursor() as cursor:
        for statement in statements:
            started = time.monotonic()
            cursor.execute(statement)
            log(f"  {statement.split()[2]}: {count} rows in {time.monotonic() - started:.1f} s")
        # What autovacuum would have done by the time a table holds a million rows: planner
        # statistics, and a visibility map for index-only scans.
        for model in (Opportunity, IdempotencyKey, WebhookDelivery):
            started = time.monotonic()
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
            log(f"  VACUUM ANALYZE {model._meta.db_table}: {time.monotonic() - started:.1f} s")


def preload_sqlite(count: int) -> None:
    """The same rows as :func:`preload_postgres`, from a recursive CTE."""
    from django.db import connection, transaction

    from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery

    def seq(select: str) -> str:
        return f"""
        WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {int(count)}),
        v AS (SELECT i,
            CASE i % 3 WHEN 0 THEN 'hubspot' WHEN 1 THEN 'salesforce' ELSE 'pipedrive' END AS connector,
            CASE (i / 3) % 2 WHEN 0 THEN 'tenant_1' ELSE 'tenant_2' END AS owner,
            strftime('%Y-%m-%d %H:%M:%f', 1704067200 + i * 20, 'unixepoch') AS ts,
            strftime('%Y-%m-%d %H:%M:%f', 1704067200 + i * 20 - 86400, 'unixepoch') AS created
            FROM s)
        {select} FROM v
        """

    stages = "CASE i % 7 " + " ".join(f"WHEN {n} THEN '{s}'" for n, s in enumerate(STAGES)) + " END"
    statements = [
        f"""INSERT INTO {Opportunity._meta.db_table} (
            connector_id, owner_id, remote_id, name, amount, currency, stage_id, pipeline_id,
            crm_owner_id, contact_ids, company_ids, engagement_ids, extra_fields, raw_resource,
            warnings, remote_created_at, remote_updated_at, deleted_at, created_at, updated_at) """
        + seq(
            f"""SELECT connector, owner, 'pre_' || i, 'Preloaded deal ' || i, (i % 100000) * 12.5,
            'EUR', {stages}, 'pipeline_sales', 'user_' || (i % 50),
            '["contact_' || (i % 5000) || '"]', '["company_' || (i % 2000) || '"]', '[]', '{{}}',
            NULL, '[]', created, ts, CASE WHEN i % 50 = 0 THEN ts END, ts, ts"""
        ),
        f"""INSERT INTO {IdempotencyKey._meta.db_table} (
            connector_id, owner_id, key, event, remote_id, outcome, deliveries, first_seen_at,
            last_seen_at) """
        + seq(
            """SELECT connector, owner, 'pre-key-' || i, 'crmOpportunity::created', 'pre_' || i,
            'processed', 1, ts, ts"""
        ),
        f"""INSERT INTO {WebhookDelivery._meta.db_table} (
            received_at, remote_addr, path, headers, body, connector_id, owner_id, idempotency_key,
            event, remote_id, status, http_status, error, attempts, processed_at) """
        + seq(
            """SELECT ts, '127.0.0.1', '/webhooks/morph/',
            '{"content-type": "application/json", "x-conector-id": "' || connector
                || '", "x-owner-id": "' || owner || '", "x-idempotency-key": "pre-key-' || i || '"}',
            '{"event": "crmOpportunity::created", "data": {"object": "resource", '
                || '"model": "crmOpportunity", "id": "pre_' || i || '", "fields": {"name": '
                || '"Preloaded deal ' || i || '", "amount": ' || ((i % 100000) * 12.5)
                || ', "currency": "EUR", "stage": {"object": "resourceRef", "model": "crmStage", '
                || '"id": "qualifiedtobuy"}, "contacts": [], "companies": [], "engagements": []}, '
                || '"createdAt": "' || created || '", "updatedAt": "' || ts
                || '", "rawResource": null, "warnings": []}}',
            connector, owner, 'pre-key-' || i, 'crmOpportunity::created', 'pre_' || i,
            CASE WHEN i % 100 = 0 THEN 'rejected' ELSE 'processed' END,
            CASE WHEN i % 100 = 0 THEN 400 ELSE 200 END,
            CASE WHEN i % 100 = 0 THEN '{"error": "invalid_event"}' ELSE '' END,
            1, CASE WHEN i % 100 = 0 THEN NULL ELSE ts END"""
        ),
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in statements:
            started = time.monotonic()
            cursor.execute(statement)
            log(f"  {statement.split()[2]}: {count} rows in {time.monotonic() - started:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def preload(count: int) -> None:
    started = time.monotonic()
    log(f"\nPreloading {count} opportunities, keys and deliveries")
    if db_vendor() == "postgresql":
        preload_postgres(count)
    else:
        preload_sqlite(count)
    from django.db import connections

    connections.close_all()
    log(f"  done in {time.monotonic() - started:.1f} s")


# --- Admin ----------------------------------------------------------------------------------------


def admin_pages() -> list[tuple[str, str]]:
    from django.urls import reverse

    opportunities = reverse("admin:morph_webhooks_opportunity_changelist")
    deliveries = reverse("admin:morph_webhooks_webhookdelivery_changelist")
    keys = reverse("admin:morph_webhooks_idempotencykey_changelist")
    return [
        ("opportunities", opportunities),
        ("opportunities ?connector_id=hubspot", f"{opportunities}?connector_id=hubspot"),
        ("opportunities ?stage_id=closedwon", f"{opportunities}?stage_id=closedwon"),
        ("opportunities ?deleted=yes", f"{opportunities}?deleted=yes"),
        ("opportunities ?q=pre_500000", f"{opportunities}?q=pre_500000"),
        ("opportunities page 100", f"{opportunities}?p=100"),
        ("deliveries", deliveries),
        ("deliveries ?status__exact=rejected", f"{deliveries}?status__exact=rejected"),
        ("deliveries ?http_status=400", f"{deliveries}?http_status=400"),
        ("deliveries ?q=pre-key-500000", f"{deliveries}?q=pre-key-500000"),
        ("keys", keys),
        ("keys ?outcome__exact=processed", f"{keys}?outcome__exact=processed"),
    ]


def measure_admin(repeats: int = 3) -> list[dict[str, Any]]:
    """Each changelist as a logged-in superuser sees it, through Django's test client in this
    process against the benchmark's database; queries captured with their timings."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-admin").first() or user_model.objects.create_superuser(
        "bench-admin", "bench@example.com", secrets.token_urlsafe(16)
    )
    client = Client()
    client.force_login(user)
    results = []
    log(f"\nAdmin changelists (best of {repeats} after a first, cold load)")
    log(f"  {'page':<40}{'cold ms':>9}{'warm ms':>9}{'queries':>9}{'SQL ms':>9}  slowest query")
    for label, url in admin_pages():
        timings = []
        queries: list[dict[str, str]] = []
        for _ in range(repeats + 1):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
            # A page number past the end redirects (302) with a small --preload; still worth timing.
            if response.status_code >= 400:
                raise RuntimeError(f"{url} answered {response.status_code}")
            queries = list(captured.captured_queries)
        by_time = sorted(queries, key=lambda q: float(q["time"]), reverse=True)
        sql_ms = sum(float(q["time"]) for q in queries) * 1000
        slowest = [{"ms": float(q["time"]) * 1000, "sql": q["sql"]} for q in by_time[:3]]
        # The expensive kinds on a large table: a count of the (filtered) table, or a DISTINCT
        # over a column to build a filter's choices.
        scans = [
            {"ms": float(q["time"]) * 1000, "sql": q["sql"]}
            for q in queries
            if "COUNT(" in q["sql"].upper() or "DISTINCT" in q["sql"].upper()
        ]
        result = {
            "page": label,
            "url": url,
            "status": response.status_code,
            "cold_ms": timings[0],
            "warm_ms": min(timings[1:]),
            "queries": len(queries),
            "sql_ms": sql_ms,
            "slowest": slowest,
            "counts_and_distincts": scans,
        }
        results.append(result)
        top = slowest[0] if slowest else {"ms": 0.0, "sql": ""}
        log(
            f"  {label:<40}{result['cold_ms']:>9.1f}{result['warm_ms']:>9.1f}{len(queries):>9}"
            f"{sql_ms:>9.1f}  {top['ms']:.1f} ms: {top['sql'][:90]}"
        )
    log("  COUNT / DISTINCT queries (last load of each page):")
    for result in results:
        for scan in result["counts_and_distincts"]:
            log(f"    {result['page']:<40}{scan['ms']:>8.1f} ms  {scan['sql'][:150]}")
    connection.close()
    return results


# --- Memory ---------------------------------------------------------------------------------------


def measure_memory(args: argparse.Namespace, server: Server, token: str) -> dict[str, Any]:
    """Send ``--memory-events`` mixed events and sample every worker's RSS once a second."""
    events = args.memory_events
    log(f"\nMemory: {events} mixed events to the app, RSS of each worker sampled every second")
    # Warm: imports, caches and the connection are in place before the first sample.
    run_wrk(args, url_for(server, APP_PATH, token), "mixed", 3)
    before = delivery_cursor()
    samples: dict[int, list[tuple[float, int]]] = {}
    started = time.monotonic()
    # An upper bound on the duration; wrk is interrupted as soon as enough events are logged.
    process = subprocess.Popen(
        wrk_command(args, url_for(server, APP_PATH, token), "mixed", 3600),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def sample() -> None:
        elapsed = time.monotonic() - started
        for pid in server.workers():
            rss = rss_kib(pid)
            if rss is not None:
                samples.setdefault(pid, []).append((elapsed, rss))

    while process.poll() is None:
        sample()
        # Every delivery takes the next primary key: the newest one says how many were logged.
        if delivery_cursor() - before >= events:
            process.send_signal(signal.SIGINT)
            break
        time.sleep(1)
    output = process.communicate()[0]
    drain(APP_PATH)
    sample()
    result = parse_wrk(output)
    outcomes = outcomes_since(before)
    workers = {
        str(pid): {
            "start_kib": points[0][1],
            "end_kib": points[-1][1],
            "max_kib": max(rss for _, rss in points),
            "samples": len(points),
            "series_kib": [rss for _, rss in points],
        }
        for pid, points in samples.items()
    }
    log(
        f"  {sum(outcomes.values())} events logged in {time.monotonic() - started:.0f} s "
        f"({result['rps']:.1f} req/s); answers {outcomes}"
    )
    for pid, figure in workers.items():
        log(
            f"  worker {pid}: start {figure['start_kib'] / 1024:.1f} MiB, end {figure['end_kib'] / 1024:.1f}"
            f" MiB, max {figure['max_kib'] / 1024:.1f} MiB ({figure['samples']} samples)"
        )
    return {"events": sum(outcomes.values()), "wrk": result, "outcomes": outcomes, "workers": workers}


# --- Main -----------------------------------------------------------------------------------------


def machine(database: str) -> dict[str, Any]:
    import django

    model = next(
        (
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": postgres_version() if database == "postgresql" else "",
        "sqlite": sqlite3.sqlite_version,
        "database": database,
    }


def load() -> str:
    # Printed with every round: other processes on a small machine move the figures, and the
    # reader should be able to see when that happened.
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every scenario (0: skip)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument(
        "--pg-database", default="mw_bench", help="PostgreSQL database to drop and create (default mw_bench)"
    )
    parser.add_argument(
        "--no-deferred", dest="deferred", action="store_false", help="skip deferred mode (PostgreSQL only)"
    )
    parser.add_argument(
        "--no-sqlite", dest="sqlite", action="store_false", help="skip the SQLite run after PostgreSQL's"
    )
    parser.add_argument(
        "--queues",
        type=lambda value: [name.strip() for name in value.split(",") if name.strip()],
        default=list(WORKERS),
        help="deferred mode's queues to measure, comma-separated (default: tasks,deliveries)",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda value: [name.strip() for name in value.split(",") if name.strip()],
        default=[scenario.name for scenario in SCENARIOS],
        help="comma-separated names of the sync-mode scenarios to run (default: all)",
    )
    parser.add_argument("--conn-max-age", type=int, default=600, help="CONN_MAX_AGE of the workers")
    parser.add_argument(
        "--stage-history", action="store_true", help="keep the example's stage-history receivers"
    )
    parser.add_argument("--preload", type=int, default=0, help="rows per table to load, then measure again")
    parser.add_argument("--admin", action="store_true", help="time the admin changelists")
    parser.add_argument("--memory-events", type=int, default=0, help="events for the memory run")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()
    if args.connections % args.threads:
        parser.error("--connections must be a multiple of --threads")
    unknown = set(args.scenarios) - {scenario.name for scenario in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    if set(args.queues) - set(WORKERS):
        parser.error(
            f"unknown queues {sorted(set(args.queues) - set(WORKERS))}: choose among {list(WORKERS)}"
        )
    return args


def run_sqlite(args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """This script again, on SQLite, new events only; its results are read back from its JSON."""
    output = args.output.with_name(f"{args.output.stem}-sqlite.json")
    output.unlink(missing_ok=True)
    command = [
        sys.executable,
        __file__,
        "--database=sqlite",
        "--no-deferred",
        "--no-sqlite",
        f"--scenarios={','.join(SQLITE_SCENARIOS)}",
        f"--output={output}",
        *(
            f"--{name.replace('_', '-')}={getattr(args, name)}"
            for name in ("rounds", "duration", "workers", "connections", "threads", "conn_max_age")
        ),
        *(["--stage-history"] if args.stage_history else []),
    ]
    log("\nSQLite: " + " ".join(command[1:]))
    done = subprocess.run(command, cwd=ROOT, check=False)
    if not output.exists():
        problems.append(f"the SQLite run exited with {done.returncode} and wrote no results")
        return {}
    result: dict[str, Any] = json.loads(output.read_text())
    problems.extend(f"SQLite: {problem}" for problem in result.get("problems", []))
    return result


def main() -> None:
    args = parse_args()
    args.wrk = ensure_wrk()
    gunicorn = ensure_gunicorn()
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Wrong answers, gunicorn's warnings and errors, a worker that did not apply everything: any
    # of them makes the figures meaningless, and the script exit 1.
    problems: list[str] = []

    env = setup_django(args, fresh_database(args.database, args.pg_database))
    migrate()
    vendor = db_vendor()
    report: dict[str, Any] = {
        "machine": machine(vendor),
        "settings": {key: value for key, value in vars(args).items() if key not in ("wrk", "output")},
    }
    m = report["machine"]
    log(
        f"Machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, Django {m['django']}, "
        + (f"PostgreSQL {m['postgresql']}, " if m["postgresql"] else "")
        + f"SQLite {m['sqlite']}, load {load()}"
    )
    token = env["MORPH_WEBHOOKS_SECRET"]
    scenarios = [scenario for scenario in SCENARIOS if scenario.name in args.scenarios]
    server = Server(gunicorn, args.workers, env, RESULTS / f"gunicorn-{vendor}.log")
    log(
        f"gunicorn: {args.workers} sync workers on {server.base}, database {vendor}, "
        f"wrk -t{args.threads} -c{args.connections}, {args.rounds} rounds of {args.duration:g} s"
    )
    try:
        smoke_test(server, token, "processed")
        warm_up(args, server, token, scenarios)
        resends = None
        if args.rounds and any(scenario.mode == "resend" for scenario in scenarios):
            resends = prepare_resends(args, server, token, RESULTS / "resend.tsv")

        empty: dict[str, dict[str, float]] = {}
        if args.rounds:
            log("\nEmpty database, sync mode")
            runs = measure(args, server, token, scenarios, problems, resends)
            empty = medians(runs)
            report["empty"] = {"runs": runs, "medians": empty}
            print_table(f"Medians of {args.rounds} rounds, empty database", empty)

        if args.preload:
            preload(args.preload)
            if args.rounds:
                log(f"\nWith {args.preload} rows per table")
                app_scenarios = [s for s in scenarios if s.path == APP_PATH and s.mode != "resend"]
                runs = measure(args, server, token, app_scenarios, problems)
                loaded = medians(runs)
                flat = {name: loaded[name]["rps"] / empty[name]["rps"] for name in loaded}
                report["preloaded"] = {
                    "rows": args.preload,
                    "runs": runs,
                    "medians": loaded,
                    "ratio_to_empty": flat,
                }
                print_table(f"Medians of {args.rounds} rounds, {args.preload} rows per table", loaded)
                for name, value in flat.items():
                    log(f"  {name} preloaded / empty: {value:.2f}x")

        if args.admin:
            report["admin"] = measure_admin()

        if args.memory_events:
            report["memory"] = measure_memory(args, server, token)
    finally:
        server.stop()
    report["server_problems"] = server.problems()
    problems.extend(f"server log: {line}" for line in report["server_problems"])
    log(f"\ngunicorn log ({server.log_path}): {len(report['server_problems'])} warnings or errors")
    for line in report["server_problems"][:10]:
        log(f"  {line}")

    if args.rounds and args.deferred and vendor == "postgresql":
        report["deferred"] = {
            queue: measure_deferred(args, gunicorn, env, token, problems, queue) for queue in args.queues
        }
    if args.rounds and args.sqlite and vendor == "postgresql":
        report["sqlite"] = run_sqlite(args, problems)

    rows = targets(report, args.workers)
    report["targets"] = [row.as_dict() for row in rows]
    report["problems"] = problems
    if rows:
        print_targets(rows, args.rounds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"\nResults written to {args.output}")
    if rows:
        table = args.output.with_suffix(".md")
        table.write_text(markdown(report, rows))
        log(f"The table for the README: {table}")
    if problems:
        log(f"\n{len(problems)} problems: these figures do not count")
        for problem in problems[:20]:
            log(f"  {problem}")
        sys.exit(1)


if __name__ == "__main__":
    main()
