"""Faults on a real PostgreSQL server: an unreachable database, a lock timeout, a dropped
connection in the middle of a transaction. Morph must be told to retry, and nothing half-written
may remain."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connection, connections
from django.test import Client

from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery
from morph_webhooks.signals import opportunity_updated
from morph_webhooks.testing import opportunity_event, post_event
from tests.helpers import locked_elsewhere, postgresql_only

pytestmark = [
    pytest.mark.django_db(transaction=True),
    postgresql_only,
]

UPDATE = opportunity_event("updated", updated_at="2025-03-07T00:00:00Z", fields={"stage": "won"})


@pytest.fixture
def stored(client: Client) -> Opportunity:
    assert (
        post_event(client, opportunity_event("created"), headers={"x-idempotency-key": "create"}).status_code
        == 200
    )
    return Opportunity.objects.get()


@pytest.fixture
def unreachable_database() -> Iterator[None]:
    connection.close()
    port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = "1"  # nothing listens there
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port


def test_database_unreachable_is_503(client, unreachable_database):
    response = post_event(client, UPDATE)

    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert response["Retry-After"]


def test_lock_held_longer_than_lock_timeout_is_503_and_the_retry_succeeds(
    client, stored, sent_signals, settings
):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "LOCK_TIMEOUT": 0.3}
    row_lock = f"SELECT 1 FROM {Opportunity._meta.db_table} WHERE id = %s FOR UPDATE"
    with locked_elsewhere(row_lock, [stored.pk]):
        started = time.monotonic()
        response = post_event(client, UPDATE, headers={"x-idempotency-key": "k1"})
        waited = time.monotonic() - started

    assert 0.3 <= waited < 5
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "unavailable"
    assert response["Retry-After"]
    assert Opportunity.objects.get().stage_id == "stage_qualified"
    assert not IdempotencyKey.objects.filter(key="k1").exists()
    failed = WebhookDelivery.objects.get(idempotency_key="k1")
    assert (failed.status, failed.http_status) == ("failed", 503)
    assert "lock timeout" in failed.error

    assert post_event(client, UPDATE, headers={"x-idempotency-key": "k1"}).json() == {"status": "processed"}
    assert Opportunity.objects.get().stage_id == "won"
    assert sent_signals.names == ["updated"]
    # SET LOCAL ended with the transaction: the connection's own setting is untouched.
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone() == ("0",)


@pytest.mark.parametrize("processing", ["sync", "deferred"])
def test_table_locked_longer_than_lock_timeout_is_503(client, settings, processing):
    # The key's table locked as a migration altering it would: the event's first statement waits
    # for it while PostgreSQL analyses the statement, before running any of it. The SET LOCAL
    # travelling in the same query string must already apply then.
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "LOCK_TIMEOUT": 0.3, "PROCESSING": processing}
    with locked_elsewhere(f"LOCK TABLE {IdempotencyKey._meta.db_table} IN ACCESS EXCLUSIVE MODE"):
        started = time.monotonic()
        response = post_event(client, UPDATE, headers={"x-idempotency-key": "k1"})
        waited = time.monotonic() - started

    assert 0.3 <= waited < 5
    assert response.status_code == 503
    failed = WebhookDelivery.objects.get(idempotency_key="k1")
    assert (failed.status, failed.http_status) == ("failed", 503)
    assert "lock timeout" in failed.error
    # Deferred mode's delivery, recorded as queued by the statement that failed, is not left so.
    assert (failed.attempts, failed.next_attempt_at) == (1, None)
    assert post_event(client, UPDATE, headers={"x-idempotency-key": "k1"}).json()["status"] in (
        "processed",
        "queued",
    )


def test_connection_dropped_mid_transaction_leaves_nothing_and_the_retry_succeeds(client, stored):
    def kill_my_connection(**kwargs) -> None:
        # Another session terminates this one, as a crashed worker or a failover would.
        pid = connection.connection.info.backend_pid
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            other.close()

    opportunity_updated.connect(kill_my_connection, weak=False, dispatch_uid="kill")
    try:
        response = post_event(client, UPDATE, headers={"x-idempotency-key": "k1"})
    finally:
        opportunity_updated.disconnect(dispatch_uid="kill")
    connection.close()  # what Django does at the end of every request

    assert response.status_code == 503
    assert Opportunity.objects.get().stage_id == "stage_qualified"
    assert not IdempotencyKey.objects.filter(key="k1").exists()
    # The failure is still on record, written over a fresh connection.
    failed = WebhookDelivery.objects.get(idempotency_key="k1")
    assert (failed.status, failed.http_status) == ("failed", 503)

    assert post_event(client, UPDATE, headers={"x-idempotency-key": "k1"}).json() == {"status": "processed"}
    assert Opportunity.objects.get().stage_id == "won"
