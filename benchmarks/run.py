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
Results go to ``benchmarks/results/latest.json`` and, as a table ready for CONTRIBUTING.md with the
machine it ran on, ``benchmarks/results/latest.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `python benchmarks/run.py` puts benchmarks/ first on the path, where its modules would pass for
# top-level ones; the checkout's root is what belongs there.
if Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)

from benchmarks.changelists import measure_admin  # noqa: E402
from benchmarks.deferred import WORKERS, measure_deferred  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    RESULTS,
    ensure_gunicorn,
    ensure_wrk,
    fresh_database,
    log,
    migrate,
    read_results,
    secrets_env,
    setup_django,
    write_results,
)
from benchmarks.memory import measure_memory  # noqa: E402
from benchmarks.preload import preload  # noqa: E402
from benchmarks.report import machine, markdown, print_targets, targets  # noqa: E402
from benchmarks.resends import prepare_resends  # noqa: E402
from benchmarks.throughput import (  # noqa: E402
    APP_PATH,
    SCENARIOS,
    load,
    measure,
    medians,
    print_table,
    serve,
    smoke_test,
    warm_up,
)

SQLITE_PATH = RESULTS / "bench.sqlite3"
# The SQLite run (step 3) and its row of the table.
SQLITE_SCENARIOS = ["naive new", "app new"]


def environment(args: argparse.Namespace, database_url: str) -> dict[str, str]:
    """The environment of gunicorn's workers, this process's and the worker's: one secret and one
    database for all."""
    return {
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        **secrets_env(),
        "BENCH_DATABASE_URL": database_url,
        "BENCH_CONN_MAX_AGE": str(args.conn_max_age),
        "BENCH_STAGE_HISTORY": "1" if args.stage_history else "0",
        "PYTHONPATH": str(ROOT),
    }


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
    result = read_results(output)
    problems.extend(f"SQLite: {problem}" for problem in result.get("problems", []))
    return result


def main() -> None:
    args = parse_args()
    args.wrk = ensure_wrk()
    ensure_gunicorn()
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Wrong answers, gunicorn's warnings and errors, a worker that did not apply everything: any
    # of them makes the figures meaningless, and the script exit 1.
    problems: list[str] = []

    env = {**os.environ, **environment(args, fresh_database(args.database, args.pg_database, SQLITE_PATH))}
    setup_django(env)
    migrate()
    from django.db import connection

    vendor = connection.vendor
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
    server = serve(args, env, RESULTS / f"gunicorn-{vendor}.log")
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
            queue: measure_deferred(args, env, token, problems, queue) for queue in args.queues
        }
    if args.rounds and args.sqlite and vendor == "postgresql":
        report["sqlite"] = run_sqlite(args, problems)

    rows = targets(report, args.workers)
    report["targets"] = [row.as_dict() for row in rows]
    report["problems"] = problems
    if rows:
        print_targets(rows, args.rounds)
    write_results(args.output, report)
    log(f"\nResults written to {args.output}")
    if rows:
        table = args.output.with_suffix(".md")
        table.write_text(markdown(report, rows))
        log(f"The table for CONTRIBUTING.md: {table}")
    if problems:
        log(f"\n{len(problems)} problems: these figures do not count")
        for problem in problems[:20]:
            log(f"  {problem}")
        sys.exit(1)


if __name__ == "__main__":
    main()
