"""The admin's Connections page: when each connection last heard from Morph, its last sync, and
"Sync now"."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import django
import pytest
from django.test import Client
from django.urls import reverse

from morph_webhooks.admin.display import moment
from morph_webhooks.models import Connection, WebhookDelivery
from morph_webhooks.testing.factories import WebhookDeliveryFactory
from tests.helpers import T0, action_names, grant, listed, statements

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:morph_webhooks_connection_changelist"
DATABASE_TASKS = "django_tasks_db.DatabaseBackend"
IMMEDIATE_TASKS = (
    "django.tasks.backends.immediate.ImmediateBackend"
    if django.VERSION >= (6,)
    else "django_tasks.backends.immediate.ImmediateBackend"
)


def received(at: datetime, connector_id: str, owner_id: str) -> None:
    obj = WebhookDeliveryFactory(connector_id=connector_id, owner_id=owner_id)
    # received_at is auto_now_add: only an update can set it.
    WebhookDelivery.objects.filter(pk=obj.pk).update(received_at=at)


def sync_now(client: Client, *connections: Connection) -> Any:
    return client.post(
        reverse(CHANGELIST),
        {"action": "sync_now", "_selected_action": [connection.pk for connection in connections]},
        follow=True,
    )


def shown(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def connections() -> list[Connection]:
    return [
        Connection.objects.create(connector_id="hubspot", owner_id="tenant_1"),
        Connection.objects.create(connector_id="hubspot", owner_id="tenant_2"),
        Connection.objects.create(connector_id="pipedrive", owner_id="tenant_1"),
    ]


def test_the_list_shows_the_last_event_and_the_last_sync(admin_client, connections):
    received(T0, "hubspot", "tenant_1")
    received(T0 + timedelta(minutes=5), "hubspot", "tenant_1")
    received(T0 + timedelta(minutes=9), "hubspot", "tenant_2")
    received(T0 + timedelta(minutes=30), "pipedrive", "tenant_9")  # another owner's
    connections[0].finish_sync(
        "failed",
        {"crmOpportunity": {"created": 3, "updated": 1, "failed": 0}, "crmStage": {"created": 2}},
        "Morph's API answered 403 for connector 'hubspot', owner 'tenant_1'.",
    )

    response = admin_client.get(reverse(CHANGELIST))

    rows = {(row.connector_id, row.owner_id): row for row in response.context["cl"].result_list}
    assert rows["hubspot", "tenant_1"].last_event_at == T0 + timedelta(minutes=5)
    assert rows["hubspot", "tenant_2"].last_event_at == T0 + timedelta(minutes=9)
    assert rows["pipedrive", "tenant_1"].last_event_at is None
    page = response.content.decode()
    assert moment(T0 + timedelta(minutes=5)) in page
    assert "5 created, 1 updated" in page
    assert "answered 403 for connector" in page
    headers = [str(header["text"]) for header in response.context["result_headers"]]
    assert headers[1:] == [
        "connector",
        "owner (tenant)",
        "last event",
        "last sync",
        "outcome",
        "counts",
        "error",
    ]


def test_a_running_sync_is_shown_instead_of_the_last_outcome(admin_client, connections):
    running, crashed, finished = connections
    for connection in connections:
        connection.finish_sync("succeeded", {"crmOpportunity": {"created": 1}})
    assert running.claim_sync()
    # A sync that died holding its lease: expired, the connection is free again.
    assert crashed.claim_sync()
    Connection.objects.filter(pk=crashed.pk).update(sync_lease_until=T0)
    running.refresh_from_db()

    page = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert page.count("running since") == 1
    assert f"running since {moment(running.last_sync_started_at)}" in page
    detail = admin_client.get(reverse("admin:morph_webhooks_connection_change", args=[running.pk]))
    assert (
        f"since {moment(running.last_sync_started_at)}; should it stop making progress, another sync "
        f"can start after {moment(running.sync_lease_until)}"
    ) in detail.content.decode()
    idle = admin_client.get(reverse("admin:morph_webhooks_connection_change", args=[finished.pk]))
    assert idle.context["adminform"].form.instance.sync_running() is False


def test_the_last_events_of_a_page_cost_no_statement_per_row(admin_client, connections):
    for connection in connections:
        received(T0, connection.connector_id, connection.owner_id)
    admin_client.get(reverse(CHANGELIST))  # the session and the user, loaded once

    with statements() as few:
        admin_client.get(reverse(CHANGELIST))
    Connection.objects.bulk_create(Connection(connector_id="zoho", owner_id=f"tenant_{n}") for n in range(10))
    with statements() as many:
        admin_client.get(reverse(CHANGELIST))

    assert len(many) == len(few)


def test_sync_now_queues_a_task_per_selected_connection(admin_client, connections, settings):
    settings.TASKS = {"default": {"BACKEND": DATABASE_TASKS}}
    from django_tasks_db.models import DBTaskResult

    response = sync_now(admin_client, connections[0], connections[2])

    assert shown(response) == ["Queued a sync of 2 connections: the task backend's workers run them."]
    assert sorted(task.args_kwargs["args"][0] for task in DBTaskResult.objects.all()) == [
        connections[0].pk,
        connections[2].pk,
    ]
    assert {task.task_path for task in DBTaskResult.objects.all()} == {
        "morph_webhooks.deferred.sync_connection_task"
    }


def test_sync_now_without_workers_says_what_to_run(admin_client, connections, settings):
    settings.TASKS = {"default": {"BACKEND": IMMEDIATE_TASKS}}

    response = sync_now(admin_client, connections[1])

    [message] = shown(response)
    assert "has no workers" in message and "Nothing was queued" in message
    assert "python manage.py morph_webhooks_sync --connector hubspot --owner tenant_2" in message
    assert Connection.objects.get(pk=connections[1].pk).last_sync_started_at is None


def test_sync_now_quotes_the_ids_in_the_command_to_run(admin_client, settings):
    settings.TASKS = {"default": {"BACKEND": IMMEDIATE_TASKS}}
    odd = Connection.objects.create(connector_id="hub spot", owner_id="t1; rm -rf ~ `id` $(id) '")

    [message] = shown(sync_now(admin_client, odd))

    assert (
        "python manage.py morph_webhooks_sync --connector 'hub spot' --owner 't1; rm -rf ~ `id` $(id) '\"'\"''"
        in message
    )


def test_sync_now_needs_the_sync_permission(client, staff, connections, settings):
    settings.TASKS = {"default": {"BACKEND": DATABASE_TASKS}}
    from django_tasks_db.models import DBTaskResult

    grant(staff, "view_connection")
    assert listed(client, CHANGELIST)
    assert "sync_now" not in action_names(client.get(reverse(CHANGELIST)))
    sync_now(client, connections[0])
    assert not DBTaskResult.objects.exists()

    grant(staff, "sync_connection")
    assert "sync_now" in action_names(client.get(reverse(CHANGELIST)))
    response = sync_now(client, connections[0])
    assert shown(response) == ["Queued a sync of 1 connection: the task backend's workers run it."]
    assert DBTaskResult.objects.count() == 1


def test_pages_speak_plainly_and_write_times_one_way(admin_client):
    connection = Connection.objects.create(
        connector_id="hubspot", owner_id="acme", last_sync_started_at=T0, last_sync_finished_at=T0
    )

    content = admin_client.get(
        reverse("admin:morph_webhooks_connection_change", args=[connection.pk])
    ).content
    page = content.decode()
    for label in ("Connector", "Owner (tenant)", "Created", "Last sync started", "Last sync finished"):
        assert f">{label}:</label>" in page
    assert "Connector id" not in page and "Owner id" not in page
    # As the lists write them, not in the project's DATETIME_FORMAT ("March 6, 2025, 9:05 a.m.").
    assert f'<div class="readonly">{moment(T0)}</div>' in page
    assert "a.m." not in page and "p.m." not in page

    page = admin_client.get(reverse("admin:morph_webhooks_connection_add")).content.decode()
    assert ">Connector:</label>" in page and ">Owner (tenant):</label>" in page
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "By connector id" not in page and ">Owner (tenant)</a>" in page
