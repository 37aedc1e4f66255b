"""Connections: registered with their first accepted event, at no cost to the next ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError
from django.urls import reverse
from django.utils import timezone

from morph_webhooks import health
from morph_webhooks.models import Connection, WebhookDelivery
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing import morph_headers, opportunity_event
from tests.helpers import raising_receiver, statements


def test_an_accepted_event_registers_its_connection(db, send):
    assert (
        send(opportunity_event(), headers=morph_headers(connector_id="hubspot", owner_id="t1")).status_code
        == 200
    )
    assert (
        send(
            opportunity_event("updated"), headers=morph_headers(connector_id="pipedrive", owner_id="t1")
        ).status_code
        == 200
    )

    assert sorted(Connection.objects.values_list("connector_id", "owner_id")) == [
        ("hubspot", "t1"),
        ("pipedrive", "t1"),
    ]


def test_a_rejected_event_registers_nothing(db, send):
    assert send(opportunity_event(fields={"amount": -1})).status_code == 400
    assert not Connection.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_only_a_new_connections_first_event_costs_a_statement(send):
    with statements() as first:
        send(opportunity_event(remote_id="a"))
    with statements() as second:
        send(opportunity_event(remote_id="b"))

    registering = [sql for sql in first if "morph_webhooks_connection" in sql]
    assert len(registering) == 1 and registering[0].startswith("INSERT")
    assert len(first) == len(second) + 1
    assert not any("morph_webhooks_connection" in sql for sql in second)


def test_a_known_connection_is_not_inserted_again(db, send):
    Connection.objects.create(connector_id="hubspot", owner_id="tenant_1")

    assert send(opportunity_event()).json() == {"status": "processed"}

    assert Connection.objects.count() == 1


def test_a_connection_deleted_here_is_registered_again(db, send):
    send(opportunity_event(remote_id="a"))
    Connection.objects.get().delete()

    send(opportunity_event(remote_id="b"))

    assert Connection.objects.count() == 1


def test_failing_to_register_does_not_fail_the_event(db, send, monkeypatch, caplog):
    def broken(*args: object, **kwargs: object) -> None:
        raise DatabaseError("connection table locked")

    monkeypatch.setattr(Connection.objects, "bulk_create", broken)

    assert send(opportunity_event()).json() == {"status": "processed"}
    assert "Could not register the connection 'hubspot' / 'tenant_1'" in caplog.text


def test_a_connection_can_be_added_in_the_admin_before_any_event(admin_client):
    response = admin_client.post(
        reverse("admin:morph_webhooks_connection_add"), {"connector_id": "hubspot", "owner_id": "tenant_9"}
    )

    assert response.status_code == 302
    connection = Connection.objects.get()
    assert (connection.connector_id, connection.owner_id) == ("hubspot", "tenant_9")
    change = admin_client.get(reverse("admin:morph_webhooks_connection_change", args=[connection.pk]))
    assert change.status_code == 200 and b"last sync counts" in change.content.lower()
    assert admin_client.get(reverse("admin:morph_webhooks_connection_changelist")).status_code == 200


def test_a_connection_whose_every_event_fails_is_registered(db, send):
    with raising_receiver(opportunity_created, RuntimeError, "CRM mirror down"):
        assert send(opportunity_event()).status_code == 500
        assert send(opportunity_event()).status_code == 500  # Morph retrying

    assert list(Connection.objects.values_list("connector_id", "owner_id")) == [("hubspot", "tenant_1")]
    # So the health check's silence check watches it: silent once its events stop.
    WebhookDelivery.objects.update(received_at=timezone.now() - timedelta(days=2))
    silent = health.silent_connections()
    assert silent.status == health.Status.WARNING
    assert "1 connection silent: hubspot / tenant_1" in silent.detail
