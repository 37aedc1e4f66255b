"""Migration 0013 (relations) over a big table on PostgreSQL, while the endpoint keeps writing.

    .venv/bin/python -m benchmarks.relations_migration [--opportunities 1000000]

A database of its own (``mw_bench_relations``, dropped and made again) is migrated to 0012 and
filled by PostgreSQL itself with ``--opportunities`` deals over 100 connections, each listing two
contacts and a company, and as many engagements listing a deal; then ANALYZEd (this machine's
PostgreSQL runs without autovacuum). A writer then does what the endpoint does to a stored deal
(lock it by its Morph id, update it, commit) in a loop on its own connection, before and during
``migrate morph_webhooks 0013``: how long each of its writes took, at worst, says how long the
migration held a lock the endpoint waits for. Prints the migration's time and the writer's
figures before and during.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SERVER = "postgres://postgres@127.0.0.1:5432"
DATABASE = "mw_bench_relations"
TENANTS = 100


def manage(*args: str) -> None:
    env = {**os.environ, "DATABASE_URL": f"{SERVER}/{DATABASE}", "DJANGO_DEBUG": "1"}
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )


def fill(connection: psycopg.Connection, count: int) -> None:
    tenant = f"'tenant_' || (i % {TENANTS})"
    moment = "TIMESTAMPTZ '2025-01-01' + i * INTERVAL '1 second'"
    connection.execute(
        f"""
        INSERT INTO morph_webhooks_opportunity (
            connector_id, owner_id, remote_id, name, amount, currency, stage_id, pipeline_id,
            crm_owner_id, contact_ids, company_ids, engagement_ids, extra_fields, warnings,
            remote_created_at, remote_updated_at, deleted_by_sync, created_at, updated_at)
        SELECT 'hubspot', {tenant}, 'deal_' || i, 'Deal ' || i, i % 100000, 'EUR', 'stage_' || (i % 7),
            'pipeline_1', 'user_' || (i % 50),
            jsonb_build_array('contact_' || i, 'contact_' || (i + 1)), jsonb_build_array('company_' || (i % 1000)),
            '[]'::jsonb, '{{}}'::jsonb, '[]'::jsonb, {moment}, {moment}, FALSE, now(), now()
        FROM generate_series(1, {count}) AS i
        """
    )
    connection.execute(
        f"""
        INSERT INTO morph_webhooks_engagement (
            connector_id, owner_id, remote_id, type, direction, status, title, description,
            crm_owner_id, user_ids, company_ids, contact_ids, opportunity_ids, extra_fields, warnings,
            remote_created_at, remote_updated_at, started_at, deleted_by_sync, created_at, updated_at)
        SELECT 'hubspot', {tenant}, 'call_' || i, 'call', 'outbound', 'completed', 'Call ' || i, '',
            'user_' || (i % 50), '[]'::jsonb, '[]'::jsonb, jsonb_build_array('contact_' || i),
            jsonb_build_array('deal_' || i), '{{}}'::jsonb, '[]'::jsonb, {moment}, {moment}, {moment},
            FALSE, now(), now()
        FROM generate_series(1, {count // 10}) AS i
        """
    )
    connection.execute("ANALYZE")


class Writer(threading.Thread):
    """The endpoint's write of a stored deal, over and over: each write's seconds, by phase."""

    def __init__(self, count: int) -> None:
        super().__init__(daemon=True)
        self.count = count
        self.phase = "before"
        self.times: dict[str, list[float]] = {"before": [], "during": [], "after": []}
        self.stop = threading.Event()

    def run(self) -> None:
        randomly = random.Random(13)
        with psycopg.connect(f"{SERVER}/{DATABASE}", autocommit=True) as connection:
            while not self.stop.is_set():
                i = randomly.randint(1, self.count)
                started = time.perf_counter()
                with connection.transaction():
                    connection.execute(
                        "SELECT id FROM morph_webhooks_opportunity WHERE connector_id = 'hubspot' "
                        "AND owner_id = %s AND remote_id = %s FOR UPDATE",
                        [f"tenant_{i % TENANTS}", f"deal_{i}"],
                    )
                    connection.execute(
                        "UPDATE morph_webhooks_opportunity SET name = %s, updated_at = now() "
                        "WHERE connector_id = 'hubspot' AND owner_id = %s AND remote_id = %s",
                        [f"Deal {i}*", f"tenant_{i % TENANTS}", f"deal_{i}"],
                    )
                self.times[self.phase].append(time.perf_counter() - started)


def figures(times: list[float]) -> str:
    if not times:
        return "no writes"
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(times)} writes, median {statistics.median(times) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, longest {ordered[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--opportunities", type=int, default=1_000_000)
    args = parser.parse_args()

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as server:
        server.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        server.execute(f"CREATE DATABASE {DATABASE}")
    manage("migrate", "--no-input")
    manage("migrate", "morph_webhooks", "0012", "--no-input")
    started = time.perf_counter()
    with psycopg.connect(f"{SERVER}/{DATABASE}", autocommit=True) as connection:
        fill(connection, args.opportunities)
        size = connection.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('morph_webhooks_opportunity'))"
        )
        print(
            f"filled {args.opportunities:,} opportunities ({size.fetchone()[0]}) in {time.perf_counter() - started:.0f} s"
        )

    writer = Writer(args.opportunities)
    writer.start()
    time.sleep(10)
    writer.phase = "during"
    started = time.perf_counter()
    manage("migrate", "morph_webhooks", "0013", "--no-input")
    took = time.perf_counter() - started
    writer.phase = "after"
    time.sleep(5)
    writer.stop.set()
    writer.join()
    during = writer.times["during"]
    before = writer.times["before"]
    print(f"migration 0013: {took:.1f} s")
    print(f"endpoint writes before (10 s): {figures(before)}")
    print(f"endpoint writes during ({took:.0f} s): {figures(during)}")
    if before and during:
        print(f"writes per second during / before: {len(during) / took / (len(before) / 10):.2f}")
    with psycopg.connect(f"{SERVER}/{DATABASE}", autocommit=True) as connection:
        for table in (
            "opportunitycontact",
            "opportunitycompany",
            "engagementopportunity",
            "engagementcontact",
        ):
            (rows,) = connection.execute(f"SELECT COUNT(*) FROM morph_webhooks_{table}").fetchone()
            print(f"{table}: {rows:,} pairs")
        (missing,) = connection.execute(
            "SELECT COUNT(*) FROM morph_webhooks_opportunity WHERE ref IS NULL"
        ).fetchone()
        print(f"opportunities without a ref: {missing}")


if __name__ == "__main__":
    main()
