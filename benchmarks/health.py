#!/usr/bin/env python
"""Time the health check (morph_webhooks.health.run_checks), and the metrics' scrape, on a large
request log.

    .venv/bin/python benchmarks/health.py [--deliveries 1000000] [--connections 200] [--runs 7]
        [--overview]

``--overview`` also times the admin overview's connections section (its two queries and the
silence verdicts), which reads every connection as the silence check does.

Creates a throwaway PostgreSQL database (``--database``, default ``mw_health_bench``) on
``--server`` (default ``postgres://postgres@127.0.0.1:5432``), migrates it, stores the deliveries
server-side (INSERT ... SELECT over generate_series) spread over 30 days and the connections, then
prints the median time of the whole check, each check's median, and the plan of each check's
query (EXPLAIN ANALYZE); then the same for the metrics' database gauges (the scrape's
statements). The database is dropped at the end, also on failure.

The mix: 0.1% dead, 1% failed, 10 queued (overdue), the rest processed; one connection in ten
silent for two days, one in fifty with a failed last sync.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `python benchmarks/health.py` puts benchmarks/ first on the path, where its modules would pass
# for top-level ones; the checkout's root is what belongs there.
if Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)

from benchmarks.harness import migrate, setup_django, throwaway_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="mw_health_bench")
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--overview", action="store_true", help="time the admin overview's connections too")
    args = parser.parse_args()

    with throwaway_database(f"{args.server}/{args.database}") as url:
        run(args, url)


def run(args: argparse.Namespace, database_url: str) -> None:
    setup_django(
        {
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
        }
    )
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from morph_webhooks import health, metrics

    migrate()
    started = time.monotonic()
    with connection.cursor() as cursor:
        # Connection i is connector c(i % 4) for owner t(i); deliveries go round the connections.
        cursor.execute(
            """
            INSERT INTO morph_webhooks_connection
                (connector_id, owner_id, created_at, last_sync_started_at, last_sync_finished_at,
                 last_sync_outcome, last_sync_error, last_sync_counts, cursors)
            SELECT 'c' || (i %% 4), 't' || i, now() - interval '60 days',
                   now() - interval '2 hours', now() - interval '1 hour',
                   CASE WHEN i %% 50 = 0 THEN 'failed' ELSE 'succeeded' END, '', '{}', '{}'
            FROM generate_series(0, %(connections)s - 1) AS i
            """,
            {"connections": args.connections},
        )
        cursor.execute(
            """
            INSERT INTO morph_webhooks_webhookdelivery
                (received_at, path, headers, body, connector_id, owner_id, idempotency_key, event,
                 remote_id, status, http_status, error, attempts, next_attempt_at, processed_at)
            SELECT received_at, '/webhooks/morph/', '{}', '{"event": "crmOpportunity::updated"}',
                   'c' || (c %% 4), 't' || c, 'key_' || i, 'crmOpportunity::updated', 'opp_' || (i %% 50000),
                   status, CASE WHEN status = 'failed' THEN 500 ELSE 200 END, '', 1,
                   CASE WHEN status = 'queued' THEN received_at + interval '10 seconds' END,
                   CASE WHEN status = 'processed' THEN received_at END
            FROM (
                SELECT i, i %% %(connections)s AS c,
                       CASE WHEN i %% 1000 = 0 THEN 'dead' WHEN i %% 100 = 1 THEN 'failed'
                            WHEN i %% 100 = 2 AND i > %(deliveries)s - 1000 THEN 'queued'
                            ELSE 'processed' END AS status,
                       -- the last delivery is now; connections 5, 15, 25... fell silent two days earlier
                       now() - (%(deliveries)s - i) * (interval '30 days' / %(deliveries)s)
                           - CASE WHEN i %% %(connections)s %% 10 = 5 THEN interval '2 days'
                                  ELSE interval '0' END AS received_at
                FROM generate_series(1, %(deliveries)s) AS i
            ) AS generated
            """,
            {"deliveries": args.deliveries, "connections": args.connections},
        )
        # Autovacuum would have run on a table this old: index-only scans need its visibility map.
        cursor.execute("VACUUM ANALYZE")
    print(
        f"Stored {args.deliveries:,} deliveries and {args.connections} connections "
        f"in {time.monotonic() - started:.0f} s."
    )

    totals = []
    per_check: dict[str, list[float]] = {check.__name__: [] for check in health.CHECKS}
    report = health.run_checks()
    for _ in range(args.runs):
        started = time.perf_counter()
        report = health.run_checks()
        totals.append(time.perf_counter() - started)
        for check in health.CHECKS:
            started = time.perf_counter()
            check()
            per_check[check.__name__].append(time.perf_counter() - started)
    print(
        f"\nrun_checks(): median {statistics.median(totals) * 1000:.1f} ms over {args.runs} runs "
        f"(min {min(totals) * 1000:.1f}, max {max(totals) * 1000:.1f}); status {report.status}"
    )
    for name, times in per_check.items():
        print(f"  {name:<20} {statistics.median(times) * 1000:7.2f} ms")
    for check in report.checks:
        print(f"  {check.name:<20} {check.status!s:<8} {check.detail[:110]}")

    if args.overview:
        time_overview(args.runs)

    with CaptureQueriesContext(connection) as queries:
        health.run_checks()
    explain(connection, queries.captured_queries)

    scrapes = []
    for _ in range(args.runs):
        started = time.perf_counter()
        gauges = list(metrics.database_metrics())
        scrapes.append(time.perf_counter() - started)
    print(
        f"\nmetrics.database_metrics(): median {statistics.median(scrapes) * 1000:.1f} ms over {args.runs} runs "
        f"(min {min(scrapes) * 1000:.1f}, max {max(scrapes) * 1000:.1f}); "
        + ", ".join(f"{gauge.name} {len(gauge.samples)} samples" for gauge in gauges)
    )
    with CaptureQueriesContext(connection) as queries:
        list(metrics.database_metrics())
    explain(connection, queries.captured_queries)
    connection.close()


def explain(connection: Any, queries: list[dict[str, str]]) -> None:
    with connection.cursor() as cursor:
        for query in queries:
            print(f"\n{query['sql']}")
            cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {query['sql']}")
            print("\n".join(f"    {row[0]}" for row in cursor.fetchall()))


def time_overview(runs: int) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils.timezone import now

    from morph_webhooks.admin.overview import connection_rows

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = connection_rows(now(), "/admin/morph_webhooks/webhookdelivery/")
        times.append(time.perf_counter() - started)
    print(
        f"\nconnection_rows(): median {statistics.median(times) * 1000:.1f} ms over {runs} runs "
        f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}); {len(rows)} connections, "
        f"{sum(row.silent for row in rows)} silent, {sum(bool(row.failures) for row in rows)} with failures"
    )
    with CaptureQueriesContext(connection) as queries:
        connection_rows(now(), "/admin/morph_webhooks/webhookdelivery/")
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {query['sql']}")
            plan = [row[0] for row in cursor.fetchall()]
            print(f"  {query['sql'][:100]}...\n    " + "\n    ".join(plan[:4] + plan[-1:]))


if __name__ == "__main__":
    main()
