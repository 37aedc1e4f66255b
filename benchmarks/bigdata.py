#!/usr/bin/env python
"""Fill a PostgreSQL database with a big tenant base's data, server-side, in minutes.

    .venv/bin/python benchmarks/bigdata.py [--database mw_big_bench] [--scale 1.0] [--keep]

At ``--scale 1``: 10,000,000 deliveries over 30 days, 1,000,000 idempotency keys, 2,000,000
opportunities, 1,000,000 contacts, 100,000 engagements and 10,000 connections (each with a
pipeline and 8 stages); ``--scale 0.01`` is a hundredth of each (connections too). The database
is dropped, created and migrated, each table filled with one ``INSERT ... SELECT`` over
``generate_series`` (no row crosses into Python), then VACUUM ANALYZEd, as autovacuum would leave
it. ``benchmarks/bigtables.py`` times the admin, the health check and pruning on it.

The rows are what the app writes: connections are ``connector-N`` (hubspot, salesforce,
pipedrive, zoho) for ``tenant-N``; deliveries go round the connections, mostly processed, with
duplicates, rejections (400, 403, 413, 415), failures (500), a few dead, ignored and stale ones,
and the newest few queued; their bodies are Morph events of about 300 bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)

from benchmarks.harness import PG_SERVER, log, migrate, recreate_database, setup_django  # noqa: E402

VOLUMES = {
    "deliveries": 10_000_000,
    "keys": 1_000_000,
    "opportunities": 2_000_000,
    "contacts": 1_000_000,
    "engagements": 100_000,
    "connections": 10_000,
}
DAYS = 30
CONNECTORS = ("hubspot", "salesforce", "pipedrive", "zoho")
STAGES_PER_PIPELINE = 8

# Connection n: one of the connectors, for tenant n. Row i of a table belongs to connection
# (i::bigint * 7919) % connections: a prime stride, so neighbouring rows are not of one connection.
CONNECTOR = "(ARRAY['hubspot','salesforce','pipedrive','zoho'])[1 + (c % 4)]"
OWNER = "'tenant-' || c"

# What every mirrored resource has, for row i of connection c created `age` ago.
RESOURCE_COLUMNS = (
    "connector_id, owner_id, remote_id, extra_fields, raw_resource, warnings, remote_created_at, "
    "remote_updated_at, deleted_at, deleted_by_sync, synced_at, created_at, updated_at"
)


def resource_values(prefix: str) -> str:
    return (
        f"{CONNECTOR}, {OWNER}, '{prefix}_' || i, '{{}}', NULL, '[]', "
        "now() - age - interval '90 days', now() - age, "
        # One in a hundred deleted by Morph.
        "CASE WHEN i % 100 = 0 THEN now() - age / 2 END, false, NULL, now() - age, now() - age"
    )


def statements(volumes: dict[str, int]) -> list[tuple[str, str]]:
    n = volumes
    conns = n["connections"]
    # Words the names are made of: a search for one finds many rows, as in a real CRM.
    companies = (
        "ARRAY['Acme','Globex','Initech','Umbrella','Stark','Wayne','Wonka','Hooli','Pied Piper',"
        "'Soylent','Tyrell','Cyberdyne','Aperture','Vandelay','Dunder Mifflin','Massive Dynamic']"
    )
    deals = "ARRAY['renewal','expansion','pilot','upsell','new business','migration','support plan']"
    first = "ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Margaret','Ken','Linus','Radia']"
    last = "ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Hamilton','Thompson','Torvalds','Perlman']"
    return [
        (
            "connections",
            f"""
            INSERT INTO morph_webhooks_connection
                (connector_id, owner_id, created_at, last_sync_started_at, last_sync_finished_at,
                 last_sync_outcome, last_sync_error, last_sync_counts, cursors)
            SELECT {CONNECTOR}, {OWNER}, now() - interval '60 days', now() - interval '2 hours',
                   now() - interval '1 hour',
                   CASE WHEN c % 50 = 0 THEN 'failed' ELSE 'succeeded' END, '', '{{}}', '{{}}'
            FROM generate_series(0, {conns - 1}) AS c
            """,
        ),
        (
            "pipelines",
            f"""
            INSERT INTO morph_webhooks_pipeline ({RESOURCE_COLUMNS}, name, stage_ids)
            SELECT {resource_values("pipeline")}, 'Sales',
                   (SELECT jsonb_agg('stage_' || c || '_' || s) FROM generate_series(0, {STAGES_PER_PIPELINE - 1}) s)
            FROM (SELECT c AS i, c, interval '30 days' AS age FROM generate_series(0, {conns - 1}) AS c) AS g
            """,
        ),
        (
            "stages",
            f"""
            INSERT INTO morph_webhooks_stage ({RESOURCE_COLUMNS}, name, type, pipeline_id)
            SELECT {resource_values("stage")}, (ARRAY['Lead','Qualified','Demo','Proposal','Negotiation',
                   'Contract','Won','Lost'])[1 + s], CASE s WHEN 6 THEN 'won' WHEN 7 THEN 'lost' ELSE 'open' END,
                   'pipeline_' || c
            FROM (SELECT c * {STAGES_PER_PIPELINE} + s + 1 AS i, c, s, interval '30 days' AS age
                  FROM generate_series(0, {conns - 1}) AS c, generate_series(0, {STAGES_PER_PIPELINE - 1}) AS s) AS g
            """,
        ),
        (
            "opportunities",
            f"""
            INSERT INTO morph_webhooks_opportunity
                ({RESOURCE_COLUMNS}, name, amount, currency, stage_id, pipeline_id, crm_owner_id,
                 contact_ids, company_ids, engagement_ids)
            SELECT {resource_values("opp")},
                   ({companies})[1 + i % 16] || ' ' || ({deals})[1 + (i / 16) % 7] || ' ' || i,
                   (i % 997) * 100.5, 'EUR', 'stage_' || c || '_' || (i % {STAGES_PER_PIPELINE}),
                   'pipeline_' || c, 'user_' || (i % 50),
                   jsonb_build_array('contact_' || (i % {max(n["contacts"], 1)})), '[]', '[]'
            FROM (SELECT i, (i::bigint * 7919) % {conns} AS c, (i % 43200) * interval '1 minute' AS age
                  FROM generate_series(1, {n["opportunities"]}) AS i) AS g
            """,
        ),
        (
            "contacts",
            f"""
            INSERT INTO morph_webhooks_contact ({RESOURCE_COLUMNS}, first_name, last_name, email, phone)
            SELECT {resource_values("contact")}, ({first})[1 + i % 10], ({last})[1 + (i / 10) % 10],
                   lower(({first})[1 + i % 10]) || '.' || i || '@' || lower(({companies})[1 + i % 16]) || '.example',
                   '+1555' || lpad((i % 10000000)::text, 7, '0')
            FROM (SELECT i, (i::bigint * 7919) % {conns} AS c, (i % 43200) * interval '1 minute' AS age
                  FROM generate_series(1, {n["contacts"]}) AS i) AS g
            """,
        ),
        (
            "engagements",
            f"""
            INSERT INTO morph_webhooks_engagement
                ({RESOURCE_COLUMNS}, type, direction, status, title, description, started_at, ended_at,
                 duration, crm_owner_id, user_ids, company_ids, contact_ids, opportunity_ids)
            SELECT {resource_values("engagement")},
                   (ARRAY['call','meeting','email','task','note'])[1 + i % 5],
                   (ARRAY['inbound','outbound'])[1 + i % 2],
                   (ARRAY['planned','inProgress','completed','canceled'])[1 + i % 4],
                   (ARRAY['Call','Meeting','Email','Follow-up'])[1 + i % 4] || ' with '
                       || ({companies})[1 + i % 16] || ' ' || i,
                   '', now() - age, now() - age + interval '30 minutes', 1800, 'user_' || (i % 50),
                   '[]', '[]', jsonb_build_array('contact_' || (i % {max(n["contacts"], 1)})),
                   jsonb_build_array('opp_' || (i % {max(n["opportunities"], 1)}))
            FROM (SELECT i, (i::bigint * 7919) % {conns} AS c, (i % 43200) * interval '1 minute' AS age
                  FROM generate_series(1, {n["engagements"]}) AS i) AS g
            """,
        ),
        (
            "deliveries",
            f"""
            INSERT INTO morph_webhooks_webhookdelivery
                (received_at, remote_addr, path, headers, body, raw_body, connector_id, owner_id,
                 idempotency_key, event, remote_id, status, http_status, error, attempts,
                 next_attempt_at, processed_at, reprocessed_at)
            SELECT received_at, ('10.0.0.' || (i % 250))::inet, '/webhooks/morph/?connector=' || {CONNECTOR},
                   jsonb_build_object('content-type', 'application/json', 'x-owner-id', {OWNER},
                                      'x-idempotency-key', 'key-' || i, 'authorization', '********'),
                   '{{"event": "crmOpportunity::updated", "data": {{"id": "opp_' || (i % {max(n["opportunities"], 1)})
                       || '", "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-02T00:00:00Z", '
                       || '"fields": {{"name": "Deal", "amount": 1200.5, "currency": "EUR", "stage": "stage_'
                       || c || '_3"}}}}}}',
                   NULL, {CONNECTOR}, {OWNER}, 'key-' || i, 'crmOpportunity::updated',
                   'opp_' || (i % {max(n["opportunities"], 1)}), status,
                   CASE status WHEN 'rejected' THEN (ARRAY[400, 403, 413, 415])[1 + (i / 50) % 4]
                               WHEN 'failed' THEN 500 ELSE 200 END,
                   CASE WHEN status IN ('failed', 'dead') THEN 'Traceback (most recent call last): ...'
                        WHEN status = 'rejected' THEN '{{"detail": "invalid"}}' ELSE '' END,
                   CASE WHEN status = 'queued' THEN 0 ELSE 1 END,
                   CASE WHEN status = 'queued' THEN received_at END,
                   CASE WHEN status IN ('processed', 'duplicate', 'ignored', 'stale') THEN received_at END,
                   NULL
            FROM (
                SELECT i, c,
                       CASE WHEN i % 10000 = 7 THEN 'dead'
                            WHEN i % 200 = 3 THEN 'failed'
                            WHEN i % 50 = 5 THEN 'rejected'
                            WHEN i % 33 = 9 THEN 'duplicate'
                            WHEN i % 100 = 11 THEN 'ignored'
                            WHEN i % 250 = 13 THEN 'stale'
                            WHEN i > {n["deliveries"]} - 20 THEN 'queued'
                            ELSE 'processed' END AS status,
                       -- Connections 5, 15, 25...: silent for the last two days.
                       now() - ({n["deliveries"]} - i) * (interval '{DAYS} days' / {max(n["deliveries"], 1)})
                           - CASE WHEN c % 10 = 5 THEN interval '2 days' ELSE interval '0' END AS received_at
                FROM (SELECT i, (i::bigint * 7919) % {conns} AS c FROM generate_series(1, {n["deliveries"]}) AS i) AS r
            ) AS g
            """,
        ),
        (
            "idempotency keys",
            # The keys of the newest deliveries (those within KEY_RETENTION_DAYS).
            f"""
            INSERT INTO morph_webhooks_idempotencykey
                (connector_id, owner_id, key, event, remote_id, outcome, deliveries, first_seen_at, last_seen_at)
            SELECT connector_id, owner_id, idempotency_key, event, remote_id,
                   CASE WHEN status IN ('queued', 'processed', 'stale', 'ignored') THEN status
                        ELSE 'processed' END, 1, received_at, received_at
            FROM morph_webhooks_webhookdelivery
            WHERE id > (SELECT max(id) FROM morph_webhooks_webhookdelivery) - {n["keys"]}
            """,
        ),
    ]


def fill(volumes: dict[str, int]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for label, sql in statements(volumes):
            started = time.monotonic()
            # No parameters: the statement is sent as it is (its % are PostgreSQL's modulo).
            cursor.execute(sql)
            log(f"  {label:<18} {cursor.rowcount:>12,} rows in {time.monotonic() - started:6.1f} s")
        started = time.monotonic()
        # As autovacuum would leave them: statistics, and the visibility map index-only scans need.
        cursor.execute("VACUUM ANALYZE")
        log(f"  VACUUM ANALYZE in {time.monotonic() - started:.1f} s")
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        log(f"  database size: {cursor.fetchone()[0]}")


def scaled(scale: float) -> dict[str, int]:
    return {name: max(int(count * scale), 1) for name, count in VOLUMES.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=PG_SERVER)
    parser.add_argument("--database", default="mw_big_bench")
    parser.add_argument("--scale", type=float, default=1.0, help="a fraction of the volumes (default 1)")
    args = parser.parse_args(argv)
    url = recreate_database(f"{args.server}/{args.database}")
    prepare(url)
    volumes = scaled(args.scale)
    log(f"Filling {args.database}: " + ", ".join(f"{count:,} {name}" for name, count in volumes.items()))
    started = time.monotonic()
    fill(volumes)
    log(f"Filled in {time.monotonic() - started:.0f} s.")


def prepare(url: str) -> None:
    setup_django(bench_env(url))
    migrate()


def bench_env(url: str) -> dict[str, Any]:
    return {
        "BENCH_DATABASE_URL": url,
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-not-a-secret-" + "x" * 40),
        "MORPH_WEBHOOKS_SECRET": os.environ.get("MORPH_WEBHOOKS_SECRET", "bench-webhook-secret-" + "y" * 20),
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
    }


if __name__ == "__main__":
    main()
