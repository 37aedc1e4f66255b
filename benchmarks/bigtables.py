#!/usr/bin/env python
"""Time every admin page, the health check and the metrics' scrape on the big database that
``benchmarks/bigdata.py`` filled.

    .venv/bin/python benchmarks/bigtables.py [--database mw_big_bench] [--repeats 2]
        [--only PREFIX] [--explain] [--json PATH]

Each page is requested through Django's test client in this process, as a logged-in superuser:
"cold" is its first request in the process (PostgreSQL's cache holds what earlier pages read, as
on a server in use), "warm" the best of ``--repeats`` more. The health check and the scrape are
called in-process too (``run_checks()``, ``database_metrics()``) and through their views.
``--explain`` prints the plan of each page's slowest query (EXPLAIN ANALYZE). ``--memory N``
requests every page N times over instead, and prints this process's resident memory after each
round: what a worker serving the admin holds as it goes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)

from benchmarks.bigdata import bench_env  # noqa: E402
from benchmarks.harness import PG_SERVER, log, setup_django  # noqa: E402

# Connection c is CONNECTORS[c % 4] for tenant-c (bigdata.py): connection 5, one of the silent.
CONNECTION = "connector_id=salesforce&owner_id=tenant-5"


def pages() -> list[tuple[str, str]]:
    from django.urls import reverse

    def changelist(model: str) -> str:
        return reverse(f"admin:morph_webhooks_{model}_changelist")

    def change(model: str, pk: int) -> str:
        return reverse(f"admin:morph_webhooks_{model}_change", args=[pk])

    d, k = changelist("webhookdelivery"), changelist("idempotencykey")
    o, c, e = changelist("opportunity"), changelist("contact"), changelist("engagement")
    n = changelist("connection")
    return [
        ("deliveries", d),
        ("deliveries ?connection", f"{d}?{CONNECTION}"),
        ("deliveries ?status=rejected", f"{d}?status__exact=rejected"),
        ("deliveries ?status=dead", f"{d}?status__exact=dead"),
        ("deliveries ?http_status=400", f"{d}?http_status=400"),
        ("deliveries ?http_status=500", f"{d}?http_status=500"),
        ("deliveries ?q=key", f"{d}?q=key-5000000"),
        ("deliveries ?q=Morph id", f"{d}?q=opp_123456"),
        ("deliveries page 50", f"{d}?p=50"),
        ("delivery change page", change("webhookdelivery", 5_000_000)),
        ("overview", reverse("admin:morph_webhooks_webhookdelivery_overview")),
        ("keys", k),
        ("keys ?connection", f"{k}?{CONNECTION}"),
        ("keys ?outcome=stale", f"{k}?outcome__exact=stale"),
        ("keys ?q=key", f"{k}?q=key-9500000"),
        ("key change page", change("idempotencykey", 500_000)),
        ("opportunities", o),
        ("opportunities ?connection", f"{o}?{CONNECTION}"),
        ("opportunities ?stage", f"{o}?stage_id=stage_5_3"),
        ("opportunities ?pipeline", f"{o}?pipeline_id=pipeline_5"),
        ("opportunities ?deleted=yes", f"{o}?deleted=yes"),
        ("opportunities ?q=name word", f"{o}?q=Globex"),
        ("opportunities ?q=name rare", f"{o}?q=pilot+1234567"),
        ("opportunities ?q=no match", f"{o}?q=Zyxwvut"),
        ("opportunities ?q=Morph id", f"{o}?q=opp_1234567"),
        ("opportunity change page", change("opportunity", 1_000_000)),
        ("contacts", c),
        ("contacts ?connection", f"{c}?{CONNECTION}"),
        ("contacts ?q=first name", f"{c}?q=Grace"),
        ("contacts ?q=email", f"{c}?q=grace.123451%40"),
        ("contacts ?q=Morph id", f"{c}?q=contact_123451"),
        ("contact change page", change("contact", 500_000)),
        ("engagements", e),
        ("engagements ?type=call", f"{e}?type__exact=call"),
        ("engagements ?status=completed", f"{e}?status__exact=completed"),
        ("engagements ?q=title", f"{e}?q=Meeting+Globex"),
        ("engagements ?q=Morph id", f"{e}?q=engagement_51234"),
        ("engagement change page", change("engagement", 50_000)),
        ("stages", changelist("stage")),
        ("pipelines", changelist("pipeline")),
        ("connections", n),
        ("connections ?outcome=failed", f"{n}?last_sync_outcome__exact=failed"),
        ("connections ?connector", f"{n}?connector_id__exact=hubspot"),
        ("connections ?q=owner", f"{n}?q=tenant-5"),
        ("connection change page", change("connection", 5_000)),
        ("health view", reverse("morph_webhooks:health")),
        ("metrics view", reverse("morph_webhooks:metrics")),
    ]


def timed(call: Callable[[], Any], repeats: int) -> tuple[float, float, Any, list[dict[str, str]]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    timings, result, queries = [], None, []
    for _ in range(repeats + 1):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            result = call()
            timings.append((time.perf_counter() - started) * 1000)
        queries = list(captured.captured_queries)
    return timings[0], min(timings[1:] or timings), result, queries


def explain(sql: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {sql}")
        return [row[0] for row in cursor.fetchall()]


def admin_client() -> Any:
    """A test client logged in as a superuser of the benchmark."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-admin").first() or user_model.objects.create_superuser(
        "bench-admin", "bench@example.com", secrets.token_urlsafe(16)
    )
    client = Client()
    client.force_login(user)
    return client


def bearer() -> dict[str, str]:
    # The health and metrics views take the webhook secret, as a monitor presents it.
    return {"authorization": f"Bearer {os.environ['MORPH_WEBHOOKS_SECRET']}"}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory(rounds: int) -> dict[str, Any]:
    """Every page requested ``rounds`` times over in this process, as one worker serving the
    admin would be: its resident memory after the first round (imports, caches and connection in
    place) and after each later one, in MiB."""
    client = admin_client()
    logging.getLogger("django.request").setLevel(logging.CRITICAL)
    after: list[float] = []
    for _ in range(rounds):
        for _label, url in pages():
            client.get(url, headers=bearer())
        after.append(round(rss_mib(), 1))
    log(
        f"  RSS after round 1: {after[0]} MiB; after round {rounds}: {after[-1]} MiB ({len(pages())} pages a round)"
    )
    log(f"  every round: {after}")
    return {"rounds": rounds, "pages": len(pages()), "rss_mib": after}


def measure(repeats: int, only: str | None, show_plans: bool) -> list[dict[str, Any]]:
    from morph_webhooks import health, metrics

    client = admin_client()
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("run_checks()", health.run_checks),
        ("database_metrics()", lambda: list(metrics.database_metrics())),
    ]
    for label, url in pages():
        calls.append((label, lambda url=url: client.get(url, headers=bearer())))
    logging.getLogger("django.request").setLevel(logging.CRITICAL)
    results = []
    log(f"  {'what':<34}{'cold ms':>9}{'warm ms':>9}{'queries':>8}{'SQL ms':>9}  slowest query")
    for label, call in calls:
        if only and not label.startswith(only):
            continue
        cold, warm, response, queries = timed(call, repeats)
        status = getattr(response, "status_code", 200)
        # The health view answers 503 when a check is critical (the data holds dead deliveries).
        if status >= 400 and not (label == "health view" and status == 503):
            raise RuntimeError(f"{label} answered {status}")
        by_time = sorted(queries, key=lambda q: float(q["time"]), reverse=True)
        sql_ms = sum(float(q["time"]) for q in queries) * 1000
        top = by_time[0] if by_time else {"time": "0", "sql": ""}
        result = {
            "what": label,
            "cold_ms": round(cold, 1),
            "warm_ms": round(warm, 1),
            "queries": len(queries),
            "sql_ms": round(sql_ms, 1),
            "slowest_ms": round(float(top["time"]) * 1000, 1),
            "slowest_sql": top["sql"],
        }
        results.append(result)
        log(
            f"  {label:<34}{cold:>9.1f}{warm:>9.1f}{len(queries):>8}{sql_ms:>9.1f}  "
            f"{result['slowest_ms']:.1f} ms: {top['sql'][:100]}"
        )
        if show_plans and top["sql"]:
            log("      " + "\n      ".join(explain(top["sql"])))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=PG_SERVER)
    parser.add_argument("--database", default="mw_big_bench")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", help="only what starts with this")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--memory",
        type=int,
        metavar="ROUNDS",
        help="instead: request every page ROUNDS times, RSS after each",
    )
    args = parser.parse_args(argv)
    setup_django({**bench_env(f"{args.server}/{args.database}"), "BENCH_CONN_MAX_AGE": "0"})
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM morph_webhooks_connection), "
            "(SELECT reltuples::bigint FROM pg_class WHERE relname = 'morph_webhooks_webhookdelivery')"
        )
        connections, deliveries = cursor.fetchone()
    log(f"{args.database}: about {deliveries:,} deliveries, {connections:,} connections")
    results: Any = memory(args.memory) if args.memory else measure(args.repeats, args.only, args.explain)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
