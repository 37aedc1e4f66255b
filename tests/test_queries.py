"""Exact SQL statement counts per delivery: the cost does not grow with the payload."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection

from morph_webhooks.testing import opportunity_event, reference
from tests.helpers import T0, statements

# Counted: every event of a known connection (a new one's first costs one more statement).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("known_connection")]


def small_event(action: str, minutes: int):
    return opportunity_event(action, updated_at=T0 + timedelta(minutes=minutes))


def big_event(action: str, minutes: int):
    fields = {
        "name": "Big",
        "contacts": [reference("genericContact", f"c{i}") for i in range(500)],
        "companies": [reference("genericCompany", f"co{i}") for i in range(200)],
    }
    raw = {f"p{i}": "v" * 50 for i in range(500)}
    return opportunity_event(
        action, updated_at=T0 + timedelta(minutes=minutes), fields=fields, rawResource=raw
    )


def verbs(sql: list[str]) -> list[str]:
    return [" ".join(statement.split()[:3]) for statement in sql]


@pytest.mark.parametrize("make_event", [small_event, big_event])
def test_statements_per_delivery(send, make_event):
    with statements() as new:
        assert send(make_event("created", 0), key="k1").json() == {"status": "processed"}
    with statements() as duplicate:
        assert send(make_event("created", 0), key="k1").json() == {"status": "duplicate"}
    with statements() as update:
        assert send(make_event("updated", 1), key="k2").json() == {"status": "processed"}
    with statements() as stale:
        assert send(make_event("updated", 0), key="k3").json() == {"status": "stale"}

    # PostgreSQL: bound the lock waits (LOCK_TIMEOUT); it cannot ride in a later statement,
    # since the first one (the redelivery check) may already wait for a lock.
    lock_timeout = ["SET LOCAL lock_timeout"] if connection.vendor == "postgresql" else []
    # redelivery check, row lock, key claim, opportunity write, delivery log
    assert verbs(new) == lock_timeout + [
        'UPDATE "morph_webhooks_idempotencykey" SET',
        'SELECT "morph_webhooks_opportunity"."id", "morph_webhooks_opportunity"."connector_id",',
        'INSERT INTO "morph_webhooks_idempotencykey"',
        'INSERT INTO "morph_webhooks_opportunity"',
        'INSERT INTO "morph_webhooks_webhookdelivery"',
    ]
    assert "FOR UPDATE" in new[len(lock_timeout) + 1] or connection.vendor == "sqlite"
    assert verbs(duplicate) == lock_timeout + [
        'UPDATE "morph_webhooks_idempotencykey" SET',
        'INSERT INTO "morph_webhooks_webhookdelivery"',
    ]
    assert len(update) == len(lock_timeout) + 5
    assert verbs(update)[len(lock_timeout) + 3] == 'UPDATE "morph_webhooks_opportunity" SET'
    assert len(stale) == len(lock_timeout) + 4


def test_lock_timeout_can_be_switched_off(send, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "LOCK_TIMEOUT": 0}
    with statements() as sql:
        assert send(small_event("created", 0), key="k1").json() == {"status": "processed"}
    assert len(sql) == 5


def test_rejected_request_is_one_statement(send):
    with statements() as sql:
        assert send(opportunity_event(fields={"amount": -1})).status_code == 400
    assert verbs(sql) == ['INSERT INTO "morph_webhooks_webhookdelivery"']
