"""The admin job: its changelists timed on the benchmark's database, queries captured."""

from __future__ import annotations

import secrets
import time
from typing import Any

from benchmarks.harness import log


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
