"""Re-sends: events delivered once to each endpoint before the rounds, which events.lua's
``resend`` mode then sends again, so that every timed request takes the duplicate path."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import Gunicorn, log
from benchmarks.throughput import APP_PATH, NAIVE_PATH, post, url_for

# This many events, delivered once to each endpoint before the rounds, then re-sent.
RESEND_EVENTS = 1000


def prepare_resends(args: argparse.Namespace, server: Gunicorn, token: str, path: Path) -> Path:
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
