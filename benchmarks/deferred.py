"""The deferred-mode job: the endpoint alone with no worker running, then one worker draining the
backlog it left, for each of deferred mode's queues."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

from benchmarks.harness import RESULTS, ROOT, log
from benchmarks.throughput import (
    APP_PATH,
    NAIVE_PATH,
    Scenario,
    delivery_cursor,
    measure,
    medians,
    print_table,
    serve,
    smoke_test,
    warm_up,
)

QUEUED = frozenset({"queued 200"})
SCENARIOS = [
    Scenario("naive new", NAIVE_PATH, "new"),
    Scenario("app deferred", APP_PATH, "new", QUEUED),
]

# Deferred mode's queues (the setting QUEUE) and the worker that drains each.
WORKERS = {
    "tasks": ["db_worker", "--batch", "--no-startup-delay"],
    "deliveries": ["morph_webhooks_worker", "--batch"],
}


def task_counts() -> dict[str, int]:
    """The database task backend's tasks, by status."""
    from django.db import connections
    from django.db.models import Count
    from django_tasks_db.models import DBTaskResult

    rows = DBTaskResult.objects.values_list("status").annotate(n=Count("pk")).order_by()
    counts = {str(status): n for status, n in rows}
    connections.close_all()
    return counts


def measure_deferred(
    args: argparse.Namespace, env: dict[str, str], token: str, problems: list[str], queue: str
) -> dict[str, Any]:
    """The endpoint in deferred mode on ``queue`` with no worker running, then one worker draining
    the backlog."""
    deferred_env = {**env, "MORPH_WEBHOOKS_PROCESSING": "deferred", "MORPH_WEBHOOKS_QUEUE": queue}
    before = delivery_cursor()
    server = serve(args, deferred_env, RESULTS / f"gunicorn-deferred-{queue}.log")
    log(f"\nDeferred mode, QUEUE = {queue!r}, endpoint only (no worker running): gunicorn on {server.base}")
    try:
        smoke_test(server, token, "queued")
        warm_up(args, server, token, SCENARIOS)
        runs = measure(args, server, token, SCENARIOS, problems)
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
