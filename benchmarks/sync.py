#!/usr/bin/env python
"""Time morph_webhooks_sync: a first sync of a large CRM, then a re-sync where nothing changed.

    .venv/bin/python benchmarks/sync.py [--opportunities 100000] [--database postgresql|sqlite]

The fake Morph API (``morph_webhooks_fake_api``: a pipeline, 7 stages, 8 reps, 60 companies and
contacts, and the deals) runs in a separate process on 127.0.0.1, so that serving pages does not
take the syncing process's interpreter lock. The sync runs here, in this process, on a throwaway
database: PostgreSQL ``--pg-database`` (default ``mw_sync_bench``) on ``--server``, created and
dropped, or a SQLite file in a temporary directory.

Reported for each run: resources per second (all models; the deals dominate), statements per
resource (counted by a connection execute_wrapper), and this process's resident memory after the
page that reached 10k, 50k and 100k resources, and its peak (VmHWM), to show memory stays flat.
Results are written to ``benchmarks/results/sync.json`` (``--output``), keyed by database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `python benchmarks/sync.py` puts benchmarks/ first on the path, where its modules would pass
# for top-level ones; the checkout's root is what belongs there.
if Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)

from benchmarks.harness import (  # noqa: E402
    free_port,
    migrate,
    read_results,
    setup_django,
    throwaway_database,
    write_results,
)

CONNECTOR, OWNER = "hubspot", "tenant_1"
KEY, SECRET = "fake-api-key", "fake-api-secret-0123456789"
MILESTONES = (10_000, 50_000, 100_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opportunities", type=int, default=100_000)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--pg-database", default="mw_sync_bench")
    parser.add_argument("--page-size", type=int, default=100, help="API_PAGE_SIZE (default 100).")
    parser.add_argument(
        "--profile", help="Write cProfiles of the runs to PROFILE.first.prof and PROFILE.re-sync.prof."
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "sync.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        if args.database == "sqlite":
            database_url = f"sqlite:///{directory}/sync.sqlite3"
            result = with_fake_api(args, database_url)
        else:
            with throwaway_database(f"{args.server}/{args.pg_database}") as database_url:
                result = with_fake_api(args, database_url)

    output = Path(args.output)
    write_results(output, {**read_results(output), args.database: result})
    print(f"\nWritten to {output}")


def with_fake_api(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env.pop("DATABASE_URL", None)  # the fake API needs no database
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "morph_webhooks_fake_api",
            "--port",
            str(port),
            "--opportunities",
            str(args.opportunities),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first_line = server.stdout.readline()  # printed once it listens
        if "fake Morph API" not in first_line:
            raise SystemExit(f"The fake Morph API did not start: {first_line!r}")
        return run(args, database_url, f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(30)


@contextlib.contextmanager
def autovacuum_analyze(postgresql: bool) -> Iterator[None]:
    """ANALYZE the database once a minute while the block runs, if autovacuum is off on the server
    (as on the machine these figures come from): autovacuum would have, the first time within a
    minute of the first rows. Without statistics, the planner reads a page's versions through the
    connector's index (every row of the connection) rather than the unique one."""
    from django.db import connection

    autovacuum_off = False
    if postgresql:
        with connection.cursor() as cursor:
            cursor.execute("SHOW autovacuum")
            autovacuum_off = cursor.fetchone()[0] == "off"
    if not autovacuum_off:
        yield
        return
    stop = threading.Event()

    def analyze() -> None:
        import psycopg

        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as database:
            while not stop.wait(60):
                database.execute("ANALYZE")

    thread = threading.Thread(target=analyze, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # what autovacuum would do in the minute after the first sync
    print("  (autovacuum is off on this server: ANALYZE ran once a minute, and after the first sync)")


def statement_kind(sql: str) -> str:
    """What a statement does, to which table: "UPDATE morph_webhooks_opportunity"."""
    verb = sql.split(None, 1)[0].upper()
    table = re.search(r'"(morph_webhooks_\w+)"', sql)
    locks = " FOR UPDATE" if sql.rstrip().endswith("FOR UPDATE") else ""
    return f"{verb} {table[1] if table else ''}{locks}".strip()


def memory() -> dict[str, int]:
    """This process's resident set and its peak so far, in MiB."""
    status = Path("/proc/self/status").read_text()
    kib = {name: int(value) for name, value in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
    return {"rss_mib": kib["VmRSS"] // 1024, "peak_rss_mib": kib["VmHWM"] // 1024}


def run(args: argparse.Namespace, database_url: str, api_url: str) -> dict[str, Any]:
    setup_django(
        {
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "MORPH_WEBHOOKS_API_URL": api_url,
            "MORPH_WEBHOOKS_API_KEY": KEY,
            "MORPH_WEBHOOKS_API_SECRET": SECRET,
        }
    )
    import django
    from django.conf import settings
    from django.db import connection

    from morph_webhooks.models import Connection, Opportunity
    from morph_webhooks.sync import ModelSync, models_to_sync, sync_connection

    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "API_PAGE_SIZE": args.page_size}
    migrate()
    sync = Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)
    specs = models_to_sync()
    print(
        f"{args.database}: {args.opportunities:,} deals from the fake Morph API at {api_url}, "
        f"{args.page_size} a page; Python {sys.version.split()[0]}, Django {django.get_version()}"
    )

    def timed(name: str) -> dict[str, Any]:
        profile = f"{args.profile}.{name}.prof" if args.profile else None
        statements = 0
        database_seconds = 0.0
        by_kind: dict[str, float] = {}
        before_models = 0
        samples: dict[str, dict[str, int]] = {}
        milestones = [m for m in MILESTONES if m <= args.opportunities] or [args.opportunities]

        def count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
            nonlocal statements, database_seconds
            statements += 1
            started = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                elapsed = time.perf_counter() - started
                database_seconds += elapsed
                by_kind[statement_kind(sql)] = by_kind.get(statement_kind(sql), 0.0) + elapsed

        def done_models(model: ModelSync) -> None:
            nonlocal before_models
            before_models += model.resources

        def on_page(model: ModelSync) -> None:
            done = before_models + model.resources
            while milestones and done >= milestones[0]:
                samples[f"{milestones.pop(0) // 1000}k"] = memory()

        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
        started, cpu_started = time.perf_counter(), time.process_time()
        with connection.execute_wrapper(count):
            if profiler is not None:
                profiler.enable()
            report = sync_connection(sync, specs, progress=done_models, on_page=on_page)
            if profiler is not None:
                profiler.disable()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        if profiler is not None and profile:
            profiler.dump_stats(profile)
        assert report.ok, report.problem()
        resources = sum(model.resources for model in report.models)
        totals: dict[str, int] = {}
        for counts in report.counts().values():
            for outcome, value in counts.items():
                totals[outcome] = totals.get(outcome, 0) + value
        result = {
            "resources": resources,
            "seconds": round(seconds, 2),
            "resources_per_second": round(resources / seconds),
            # This process's CPU time (the sync's Python; the database server's is apart): steadier
            # than the wall clock on a shared machine.
            "cpu_seconds": round(cpu_seconds, 2),
            "resources_per_cpu_second": round(resources / cpu_seconds),
            "statements": statements,
            # Waiting for the statements (their Python, the round trips and the server's work).
            "statement_seconds": round(database_seconds, 2),
            "statement_seconds_by_kind": {kind: round(seconds, 2) for kind, seconds in by_kind.items()},
            "statements_per_resource": round(statements / resources, 3),
            "outcomes": {outcome: value for outcome, value in totals.items() if value},
            "memory_at": samples,
            "peak_rss_mib": memory()["peak_rss_mib"],
        }
        memory_line = ", ".join(f"{at}: {sample['rss_mib']} MiB" for at, sample in samples.items())
        print(
            f"  {name:<9} {resources:,} resources in {seconds:.1f} s: {result['resources_per_second']:,}/s, "
            f"{result['resources_per_cpu_second']:,}/CPU s, "
            f"{result['statements_per_resource']} statements/resource ({database_seconds:.1f} s); RSS {memory_line}; "
            f"peak {result['peak_rss_mib']} MiB; {result['outcomes']}"
        )
        return result

    with autovacuum_analyze(args.database == "postgresql"):
        first = timed("first")
    assert Opportunity.objects.count() == args.opportunities
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_total_relation_size(%s), current_setting('shared_buffers')",
                [Opportunity._meta.db_table],
            )
            size, shared_buffers = cursor.fetchone()
        first["opportunity_table_mib"] = size // 2**20
        print(f"  the deals' table and indexes: {size // 2**20} MiB; shared_buffers {shared_buffers}")
    resync = timed("re-sync")
    assert resync["outcomes"] == {"unchanged": resync["resources"]}, resync["outcomes"]
    connection.close()
    return {
        "command": " ".join(["benchmarks/sync.py", *sys.argv[1:]]),
        "opportunities": args.opportunities,
        "page_size": args.page_size,
        "python": sys.version.split()[0],
        "django": django.get_version(),
        "first_sync": first,
        "resync": resync,
        "targets": {"first_sync_per_second": 1000, "resync_per_second": 5000},
    }


if __name__ == "__main__":
    main()
