from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.db import connection

from morph_webhooks.events import MorphEvent
from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery
from morph_webhooks.resources.registry import REGISTRY
from morph_webhooks.signals import event_received, opportunity_updated
from morph_webhooks.testing import opportunity_event, post_event, resource_event
from tests.helpers import at, raising_receiver

pytestmark = pytest.mark.django_db


def test_created_then_duplicate_is_applied_once(send, sent_signals):
    first = send(opportunity_event("created"), key="k1")
    again = send(opportunity_event("created"), key="k1")

    assert first.json() == {"status": "processed"}
    assert again.json() == {"status": "duplicate"}
    assert Opportunity.objects.count() == 1
    assert sent_signals.names == ["created"]
    key = IdempotencyKey.objects.get()
    assert (key.deliveries, key.outcome, key.event, key.remote_id) == (
        2,
        "processed",
        "crmOpportunity::created",
        "opp_1",
    )
    assert key.last_seen_at > key.first_seen_at
    assert list(WebhookDelivery.objects.order_by("pk").values_list("status", flat=True)) == [
        "processed",
        "duplicate",
    ]


def test_signal_arguments(send, sent_signals):
    send(opportunity_event("created"), key="k1", headers={"x-conector-id": "pipedrive", "x-owner-id": "t9"})

    [(name, kwargs)] = sent_signals.calls
    opportunity = Opportunity.objects.get()
    assert name == "created"
    assert kwargs["sender"] is Opportunity
    assert kwargs["instance"] == opportunity
    assert kwargs["created"] is True
    event = kwargs["event"]
    assert (event.type, event.action, event.model) == ("crmOpportunity::created", "created", "crmOpportunity")
    assert (event.connector_id, event.owner_id, event.idempotency_key) == ("pipedrive", "t9", "k1")
    assert event.payload["data"]["fields"]["name"] == "Acme renewal"


def test_fields_are_stored_as_morph_sends_them(send):
    send(
        opportunity_event(
            "created",
            rawResource={"hs_object_id": "123", "nested": {"a": [1, 2]}},
            warnings=[{"code": "w1", "message": "m"}],
        )
    )

    opportunity = Opportunity.objects.get()
    assert opportunity.name == "Acme renewal"
    assert opportunity.amount == Decimal("12500")
    assert opportunity.currency == "EUR"
    assert (opportunity.stage_id, opportunity.pipeline_id, opportunity.crm_owner_id) == (
        "stage_qualified",
        "pipeline_sales",
        "user_42",
    )
    assert (opportunity.contact_ids, opportunity.company_ids, opportunity.engagement_ids) == (
        ["contact_1"],
        ["company_1"],
        [],
    )
    assert (opportunity.connector_id, opportunity.owner_id, opportunity.remote_id) == (
        "hubspot",
        "tenant_1",
        "opp_1",
    )
    assert opportunity.raw_resource == {"hs_object_id": "123", "nested": {"a": [1, 2]}}
    assert opportunity.warnings == [{"code": "w1", "message": "m"}]
    assert opportunity.remote_created_at == datetime(2025, 3, 6, 9, 5, 4, 596000, tzinfo=timezone.utc)
    assert opportunity.remote_updated_at == datetime(2025, 3, 6, 9, 15, 4, 596000, tzinfo=timezone.utc)
    assert opportunity.deleted_at is None


def test_update_changes_only_the_fields_it_carries(send, sent_signals):
    send(opportunity_event("created", updated_at=at(0)))
    response = send(
        opportunity_event("updated", updated_at=at(1), fields={"stage": "stage_won", "amount": "13000.5"})
    )

    assert response.json() == {"status": "processed"}
    opportunity = Opportunity.objects.get()
    assert (opportunity.stage_id, opportunity.amount, opportunity.name) == (
        "stage_won",
        Decimal("13000.5"),
        "Acme renewal",
    )
    assert opportunity.remote_updated_at == at(1)
    assert sent_signals.names == ["created", "updated"]
    assert sent_signals.calls[1][1]["created"] is False


def test_null_clears_a_field(send):
    send(opportunity_event("created", updated_at=at(0)))
    send(
        opportunity_event(
            "updated",
            updated_at=at(1),
            fields={"amount": None, "stage": None, "contacts": None, "name": None},
        )
    )

    opportunity = Opportunity.objects.get()
    assert (opportunity.amount, opportunity.stage_id, opportunity.contact_ids, opportunity.name) == (
        None,
        "",
        [],
        "",
    )


def test_unknown_fields_are_kept(send):
    send(opportunity_event("created", fields={"name": "X", "probability": 0.4, "closeDate": "2025-04-01"}))

    assert Opportunity.objects.get().extra_fields == {"probability": 0.4, "closeDate": "2025-04-01"}


def test_older_update_is_stale(send, sent_signals):
    send(opportunity_event("created", updated_at=at(10), fields={"stage": "new"}))
    response = send(opportunity_event("updated", updated_at=at(5), fields={"stage": "old"}))

    assert response.json() == {"status": "stale"}
    assert Opportunity.objects.get().stage_id == "new"
    assert sent_signals.names == ["created"]
    assert IdempotencyKey.objects.filter(outcome="stale").count() == 1


def test_update_before_create_then_late_create_is_stale(send, sent_signals):
    send(opportunity_event("updated", updated_at=at(5), fields={"stage": "later"}))
    response = send(opportunity_event("created", updated_at=at(0), fields={"stage": "first"}))

    assert response.json() == {"status": "stale"}
    assert Opportunity.objects.get().stage_id == "later"
    assert sent_signals.names == ["updated"]
    assert sent_signals.calls[0][1]["created"] is True


def test_same_updated_at_keeps_the_stored_version(send, sent_signals):
    # A notification re-sent under a new key (connectors that put the send time in the key).
    send(opportunity_event("updated", updated_at=at(1), fields={"stage": "a"}), key="k1")
    response = send(opportunity_event("updated", updated_at=at(1), fields={"stage": "b"}), key="k2")

    assert response.json() == {"status": "stale"}
    assert Opportunity.objects.get().stage_id == "a"
    assert sent_signals.names == ["updated"]


def test_delete_soft_deletes_and_keeps_the_row(send, sent_signals):
    send(opportunity_event("created", updated_at=at(0)))
    response = send(opportunity_event("deleted", updated_at=at(1), fields={}))

    assert response.json() == {"status": "processed"}
    opportunity = Opportunity.objects.get()
    assert opportunity.deleted_at is not None
    assert opportunity.name == "Acme renewal"
    assert Opportunity.objects.alive().count() == 0
    assert Opportunity.objects.deleted().count() == 1
    assert sent_signals.names == ["created", "deleted"]


def test_delete_with_the_same_updated_at_applies(send):
    send(opportunity_event("created", updated_at=at(0)))
    response = send(opportunity_event("deleted", updated_at=at(0), fields={}))

    assert response.json() == {"status": "processed"}
    assert Opportunity.objects.get().is_deleted


def test_delete_of_unknown_opportunity_is_recorded_and_blocks_an_older_create(send, sent_signals):
    deleted = send(opportunity_event("deleted", updated_at=at(5), fields={}))
    created = send(opportunity_event("created", updated_at=at(0)))

    assert (deleted.json(), created.json()) == ({"status": "processed"}, {"status": "stale"})
    opportunity = Opportunity.objects.get()
    assert opportunity.is_deleted
    assert sent_signals.names == ["deleted"]
    assert sent_signals.calls[0][1]["created"] is True


def test_older_update_does_not_bring_back_a_deleted_row(send):
    send(opportunity_event("created", updated_at=at(0)))
    send(opportunity_event("deleted", updated_at=at(5), fields={}))
    response = send(opportunity_event("updated", updated_at=at(3)))

    assert response.json() == {"status": "stale"}
    assert Opportunity.objects.get().is_deleted


@pytest.mark.parametrize("action", ["created", "updated"])
def test_newer_event_restores_a_deleted_row(send, sent_signals, action):
    send(opportunity_event("created", updated_at=at(0)))
    send(opportunity_event("deleted", updated_at=at(5), fields={}))
    response = send(opportunity_event(action, updated_at=at(6), fields={"stage": "reopened"}))

    assert response.json() == {"status": "processed"}
    opportunity = Opportunity.objects.get()
    assert (opportunity.deleted_at, opportunity.stage_id) == (None, "reopened")
    assert sent_signals.names == ["created", "deleted", action]


def test_keys_are_scoped_by_connector_and_owner(send, sent_signals):
    send(
        opportunity_event("created", "a"),
        key="same",
        headers={"x-conector-id": "hubspot", "x-owner-id": "t1"},
    )
    send(
        opportunity_event("created", "a"),
        key="same",
        headers={"x-conector-id": "salesforce", "x-owner-id": "t1"},
    )
    send(
        opportunity_event("created", "a"),
        key="same",
        headers={"x-conector-id": "hubspot", "x-owner-id": "t2"},
    )

    assert IdempotencyKey.objects.count() == 3
    assert Opportunity.objects.count() == 3
    assert sent_signals.names == ["created"] * 3


def test_other_models_are_acknowledged_and_ignored(send, sent_signals):
    payload = {
        "event": "telephonyCall::created",
        "data": {"object": "resource", "model": "telephonyCall", "id": "c1", "fields": {"x": 1}},
    }
    first = send(payload, key="k")
    again = send(payload, key="k")

    assert (first.status_code, first.json()) == (200, {"status": "ignored"})
    assert again.json() == {"status": "duplicate"}
    assert Opportunity.objects.count() == 0
    assert sent_signals.names == []
    assert IdempotencyKey.objects.get().outcome == "ignored"
    assert WebhookDelivery.objects.first().event == "telephonyCall::created"


def test_event_received_once_per_applied_event_ignored_ones_included(send, sent_signals):
    received = []

    def receiver(sender, event, outcome, connector_id, owner_id, **kwargs):
        # After the model's own signal, in the same transaction: its row is there to be read.
        stored = Opportunity.objects.filter(remote_id=event.remote_id).exists()
        received.append((sender, event.type, event.remote_id, outcome, connector_id, owner_id, stored))

    engagement = resource_event("telephonyCall", "created", "call_1", fields={"type": "call"})
    event_received.connect(receiver)
    try:
        send(opportunity_event("created", updated_at=at(10)), key="created")
        send(opportunity_event("created", updated_at=at(10)), key="created")  # duplicate
        send(opportunity_event("updated", updated_at=at(5)), key="late")  # stale
        send(engagement, key="call")  # ignored: a model the app does not mirror
        send(engagement, key="call")  # its duplicate
        send(opportunity_event("deleted", updated_at=at(20)), key="deleted")
    finally:
        event_received.disconnect(receiver)

    assert received == [
        (MorphEvent, "crmOpportunity::created", "opp_1", "processed", "hubspot", "tenant_1", True),
        (MorphEvent, "telephonyCall::created", "call_1", "ignored", "hubspot", "tenant_1", False),
        (MorphEvent, "crmOpportunity::deleted", "opp_1", "processed", "hubspot", "tenant_1", True),
    ]
    assert sent_signals.names == ["created", "deleted"]


def test_an_event_received_receiver_that_raises_rolls_an_ignored_event_back(send):
    engagement = resource_event("telephonyCall", "created", "call_1", fields={"type": "call"})
    with raising_receiver(event_received, RuntimeError, "receiver bug"):
        response = send(engagement, key="call")

    assert response.status_code == 500
    assert not IdempotencyKey.objects.exists()
    assert WebhookDelivery.objects.get().status == "failed"
    assert send(engagement, key="call").json() == {"status": "ignored"}  # Morph's retry applies it


def test_a_receiver_error_holding_a_nul_is_recorded_on_its_delivery(send):
    # A receiver may quote bytes a service sent it; PostgreSQL stores no NUL, and a delivery whose
    # failure cannot be written is neither logged nor, queued, ever given up on.
    call = resource_event("telephonyCall", "created", "call_1", fields={"type": "call"})
    with raising_receiver(event_received, RuntimeError, "service answered b\x00d"):
        response = send(call, key="call")

    assert response.status_code == 500
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and "RuntimeError: service answered b\ufffdd" in delivery.error


def test_receiver_error_rolls_back_everything_and_answers_500(send):
    def broken(**kwargs):
        Opportunity.objects.update(name="written by the receiver")
        raise RuntimeError("receiver is down")

    send(opportunity_event("created", updated_at=at(0)), key="k0")
    opportunity_updated.connect(broken, weak=False, dispatch_uid="broken")
    try:
        response = send(opportunity_event("updated", updated_at=at(1), fields={"stage": "won"}), key="k1")
    finally:
        opportunity_updated.disconnect(dispatch_uid="broken")

    assert response.status_code == 500
    assert response.json()["error"] == "processing_failed"
    opportunity = Opportunity.objects.get()
    assert (opportunity.stage_id, opportunity.name) == ("stage_qualified", "Acme renewal")
    assert not IdempotencyKey.objects.filter(key="k1").exists()
    failed = WebhookDelivery.objects.get(idempotency_key="k1")
    assert (failed.status, failed.http_status) == ("failed", 500)
    assert "receiver is down" in failed.error

    retried = send(opportunity_event("updated", updated_at=at(1), fields={"stage": "won"}), key="k1")
    assert retried.json() == {"status": "processed"}
    assert Opportunity.objects.get().stage_id == "won"


def query_a_missing_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM no_such_table")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("callback", [lambda: 1 / 0, query_a_missing_table], ids=["error", "database_error"])
def test_failing_on_commit_callback_does_not_turn_a_stored_event_into_a_failure(send, caplog, callback):
    from django.db import transaction

    def later(**kwargs):
        transaction.on_commit(callback)

    opportunity_updated.connect(later, weak=False, dispatch_uid="later")
    try:
        response = send(opportunity_event("updated"), key="k1")
    finally:
        opportunity_updated.disconnect(dispatch_uid="later")

    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.http_status, delivery.error) == ("processed", 200, "")
    assert "on_commit callback failed" in caplog.text
    # Morph's retry of a stored event is a duplicate, as it should be.
    assert send(opportunity_event("updated"), key="k1").json() == {"status": "duplicate"}
    assert Opportunity.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_commit_is_not_taken_for_a_failed_callback(send, monkeypatch):
    from django.db import OperationalError

    def lose_the_connection() -> None:
        raise OperationalError("server closed the connection unexpectedly")

    # The commit itself fails: nothing was stored, whatever the receivers queued for afterwards.
    monkeypatch.setattr(connection, "_commit", lose_the_connection)
    response = send(opportunity_event("created"), key="k1")
    monkeypatch.undo()

    assert response.status_code == 503
    assert not Opportunity.objects.exists() and not IdempotencyKey.objects.exists()
    assert WebhookDelivery.objects.get().status == "failed"
    assert send(opportunity_event("created"), key="k1").json() == {"status": "processed"}


def test_one_log_line_per_request_without_secrets(send, caplog):
    caplog.set_level("INFO", logger="morph_webhooks")
    send(opportunity_event(), key="k1")
    send(opportunity_event(), key="k1")
    send(opportunity_event(fields={"amount": -1}), key="k2")

    lines = [r.getMessage() for r in caplog.records if r.name == "morph_webhooks.views"]
    assert len(lines) == 3
    assert lines[0].startswith("Morph webhook 200 processed key='k1' connector='hubspot' owner='tenant_1'")
    assert lines[1].startswith("Morph webhook 200 duplicate key='k1'")
    assert lines[2].startswith("Morph webhook 400 invalid_event key='k2'")
    assert "test-secret" not in caplog.text


def test_extra_fields_are_merged_key_by_key(send):
    send(opportunity_event("created", updated_at=at(0), fields={"hs_priority": "high", "hs_region": "EU"}))
    send(opportunity_event("updated", updated_at=at(1), fields={"hs_forecast": 0.4, "hs_region": "US"}))
    send(opportunity_event("updated", updated_at=at(2), fields={"hs_priority": None}))

    assert Opportunity.objects.get().extra_fields == {
        "hs_priority": None,
        "hs_region": "US",
        "hs_forecast": 0.4,
    }


def test_unknown_keys_reach_the_delivery_log(send, caplog):
    payload = opportunity_event(updated_at=at(0))
    payload["data"]["fieldz"] = {"name": "typo"}

    assert send(payload, key="k1").json() == {"status": "processed"}

    delivery = WebhookDelivery.objects.get()
    assert json.loads(delivery.error) == {"warnings": {"data.fieldz": ["Not a key Morph sends; ignored."]}}
    assert "data.fieldz" in caplog.text
    assert send(opportunity_event(updated_at=at(1)), key="k2").json() == {"status": "processed"}
    assert WebhookDelivery.objects.get(idempotency_key="k2").error == ""


def test_integers_of_any_length_round_trip(send):
    huge = 10**400 + 1
    payload = opportunity_event(fields={"hs_big": huge}, rawResource={"list": [-huge]})
    assert send(payload).json() == {"status": "processed"}

    opportunity = Opportunity.objects.get()
    assert (opportunity.extra_fields, opportunity.raw_resource) == ({"hs_big": huge}, {"list": [-huge]})


def test_the_registry_decides_what_is_mirrored(client, monkeypatch):
    # A Morph model is mirrored because its spec is registered, not because code names it.
    monkeypatch.delitem(REGISTRY, "crmOpportunity")

    response = post_event(client, resource_event("crmOpportunity", "created", "opp_1"))

    assert response.json() == {"status": "ignored"}
    assert not Opportunity.objects.exists()
