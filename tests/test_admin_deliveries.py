"""The admin's request log: its list, filters and change page, and the reprocess action."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.messages import constants
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from morph_webhooks.admin.deliveries import HTTPStatusFilter
from morph_webhooks.models import Connection, IdempotencyKey, Opportunity, Outcome, WebhookDelivery
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing import morph_headers, opportunity_event, post_event
from morph_webhooks.testing.factories import IdempotencyKeyFactory, OpportunityFactory, WebhookDeliveryFactory
from tests.helpers import action_names, admin_url, filter_titles, grant, listed, raising_receiver

pytestmark = pytest.mark.django_db

DELIVERIES = "admin:morph_webhooks_webhookdelivery_changelist"
OPPORTUNITIES = "admin:morph_webhooks_opportunity_changelist"


def reprocess(client: Client, *deliveries: WebhookDelivery) -> Any:
    return client.post(
        reverse(DELIVERIES),
        {"action": "reprocess", "index": 0, "_selected_action": [d.pk for d in deliveries]},
        follow=True,
    )


def messages_of(response: Any) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in response.context["messages"]]


def test_delivery_filters_and_search(admin_client):
    ok = WebhookDeliveryFactory(idempotency_key="key-ok", remote_id="opp_ok")
    bad = WebhookDeliveryFactory(status=Outcome.REJECTED, http_status=400, idempotency_key="key-bad")

    assert filter_titles(admin_client, DELIVERIES) == ["connection", "status", "HTTP status"]

    assert listed(admin_client, DELIVERIES, "status=rejected") == [bad]
    assert listed(admin_client, DELIVERIES, "http_status=200") == [ok]
    assert listed(admin_client, DELIVERIES, "http_status=400") == [bad]
    assert listed(admin_client, DELIVERIES, "q=key-bad") == [bad]
    assert listed(admin_client, DELIVERIES, "q=opp_ok") == [ok]
    assert listed(admin_client, DELIVERIES, "q=KEY-BAD") == []


def test_the_http_status_filter_lists_every_status_the_endpoint_records(client, settings):
    settings.MORPH_WEBHOOKS = {
        **settings.MORPH_WEBHOOKS,
        "ALLOWED_CONNECTORS": ["hubspot"],
        "MAX_BODY_SIZE": 5000,
    }

    post_event(client, opportunity_event())  # 200
    post_event(client, {"event": "crmOpportunity::created"})  # 400
    post_event(client, opportunity_event(), headers={"x-conector-id": "pipedrive"})  # 403
    post_event(client, opportunity_event(name="x" * 5000))  # 413
    bearer = {"Authorization": f"Bearer {settings.MORPH_WEBHOOKS['SECRETS'][0]}"}
    client.post(
        reverse("morph_webhooks:receive"), "{}", "text/plain", headers={**morph_headers(), **bearer}
    )  # 415
    client.post(
        reverse("morph_webhooks:receive"),
        "{}",
        "application/json",
        headers={**morph_headers(), **bearer},
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )  # 411
    with raising_receiver(opportunity_created, ValueError, "receiver bug"):
        post_event(client, opportunity_event("created", "opp_2"))  # 500

    recorded = set(WebhookDelivery.objects.values_list("http_status", flat=True))
    assert recorded == {200, 400, 403, 411, 413, 415, 500}
    assert recorded <= set(HTTPStatusFilter.STATUSES)


def test_delivery_list_does_not_scan_the_log_for_its_filters(admin_client):
    WebhookDeliveryFactory(status=Outcome.REJECTED, http_status=415)

    with CaptureQueriesContext(connection) as captured:
        content = admin_client.get(reverse(DELIVERIES)).content.decode()

    # The choices are fixed: no SELECT DISTINCT over every delivery to build them.
    assert not [query["sql"] for query in captured.captured_queries if "DISTINCT" in query["sql"].upper()]
    assert "415 Unsupported Media Type" in content and "503 Service Unavailable" in content
    # An unknown value filters nothing rather than failing.
    assert len(listed(admin_client, DELIVERIES, "http_status=abc")) == 1


def test_delivery_list_leaves_bodies_unloaded(admin_client):
    WebhookDeliveryFactory()

    [row] = listed(admin_client, DELIVERIES)

    assert {"body", "headers", "error"} <= row.get_deferred_fields()


def test_delivery_body_headers_and_error_are_pretty_and_escaped(admin_client):
    delivery = WebhookDeliveryFactory(
        payload=opportunity_event(fields={"name": "<script>alert(1)</script>"}),
        idempotency_key="<i>key</i>",
        status=Outcome.FAILED,
        http_status=500,
        error="Traceback (most recent call last):\n  <boom>",
    )

    content = admin_client.get(admin_url(delivery, "change")).content.decode()

    assert "<script>" not in content
    assert "<i>key" not in content
    assert "  &quot;event&quot;: &quot;crmOpportunity::created&quot;" in content
    assert "&quot;name&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in content
    assert "  &quot;x-idempotency-key&quot;: &quot;&lt;i&gt;key&lt;/i&gt;&quot;" in content
    assert "<pre>Traceback (most recent call last):\n  &lt;boom&gt;</pre>" in content


def test_delivery_headers_never_show_a_signature_or_the_secret(admin_client, settings):
    # As rows stored before the request log masked them hold them.
    delivery = WebhookDeliveryFactory()
    secret = settings.MORPH_WEBHOOKS["SECRETS"][0]
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        headers={
            **delivery.headers,
            "webhook-signature": "v1,c2lnbmF0dXJl",
            "x-original-url": f"/webhooks/morph/?token={secret}",
        }
    )

    content = admin_client.get(admin_url(delivery, "change")).content.decode()

    assert "webhook-signature" not in content and "c2lnbmF0dXJl" not in content
    assert secret not in content
    assert "/webhooks/morph/?token=[redacted]" in content


def test_delivery_body_that_is_not_json_is_shown_as_sent(admin_client):
    garbage = WebhookDeliveryFactory(body="<script>not json", status=Outcome.REJECTED, http_status=400)
    # Re-encoding would keep only one of the two values the sender wrote.
    twice = WebhookDeliveryFactory(
        body='{"event": "a", "event": "b"}', status=Outcome.REJECTED, http_status=400
    )

    assert (
        "<pre>&lt;script&gt;not json</pre>" in admin_client.get(admin_url(garbage, "change")).content.decode()
    )
    content = admin_client.get(admin_url(twice, "change")).content.decode()
    assert "<pre>{&quot;event&quot;: &quot;a&quot;, &quot;event&quot;: &quot;b&quot;}</pre>" in content


# Reprocess action


def test_reprocess_applies_a_failed_delivery(admin_client):
    delivery = WebhookDeliveryFactory(
        remote_id="opp_7", status=Outcome.FAILED, http_status=500, error="Traceback: database down"
    )

    response = reprocess(admin_client, delivery)

    assert messages_of(response) == [(constants.SUCCESS, "Reprocessed 1 delivery: 1 processed.")]
    opportunity = Opportunity.objects.get()
    assert (opportunity.remote_id, opportunity.name) == ("opp_7", "Acme renewal")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status, delivery.error, delivery.attempts) == (
        "processed",
        200,
        "",
        2,
    )
    assert delivery.processed_at is not None
    assert IdempotencyKey.objects.get().key == delivery.idempotency_key


@pytest.mark.parametrize("status", ["processed", "stale", "duplicate"])
def test_reprocess_of_a_settled_delivery_keeps_its_outcome(admin_client, send, sent_signals, status):
    assert send(opportunity_event("created"), key="k1").json() == {"status": "processed"}
    if status == "stale":
        assert send(opportunity_event("updated", updated_at="2020-01-01T00:00:00Z")).json() == {
            "status": status
        }
    if status == "duplicate":
        assert send(opportunity_event("created"), key="k1").json() == {"status": status}
    delivery = WebhookDelivery.objects.get(status=status)
    delivery_before = WebhookDelivery.objects.values().get(pk=delivery.pk)
    keys_before = list(IdempotencyKey.objects.values())
    opportunity_before = Opportunity.objects.values().get()

    response = reprocess(admin_client, delivery)

    assert messages_of(response) == [(constants.SUCCESS, "Reprocessed 1 delivery: 1 already applied.")]
    delivery.refresh_from_db()
    assert delivery.reprocessed_at is not None
    # The row still says what the delivery did when it ran; only the reprocess is added.
    assert WebhookDelivery.objects.values().get(pk=delivery.pk) == {
        **delivery_before,
        "reprocessed_at": delivery.reprocessed_at,
    }
    assert list(IdempotencyKey.objects.values()) == keys_before
    assert Opportunity.objects.values().get() == opportunity_before
    assert sent_signals.names == ["created"]


def test_reprocess_leaves_an_invalid_delivery_rejected(admin_client):
    delivery = WebhookDeliveryFactory(body="{not json", status=Outcome.REJECTED, http_status=400, error="")

    response = reprocess(admin_client, delivery)

    assert messages_of(response) == [(constants.WARNING, "Reprocessed 1 delivery: 1 rejected.")]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status, delivery.attempts) == ("rejected", 400, 2)
    assert json.loads(delivery.error)["fields"]["body"][0].startswith("Not valid JSON")
    assert not Opportunity.objects.exists()
    assert not IdempotencyKey.objects.exists()


def test_reprocess_counts_every_outcome(admin_client, send):
    send(opportunity_event("created", "opp_applied"), key="k-applied")
    applied = WebhookDelivery.objects.get()
    failed = WebhookDeliveryFactory(remote_id="opp_new", status=Outcome.FAILED, http_status=500)
    invalid = WebhookDeliveryFactory(body="[]", status=Outcome.REJECTED, http_status=400)

    response = reprocess(admin_client, applied, failed, invalid)

    assert messages_of(response) == [
        (constants.WARNING, "Reprocessed 3 deliveries: 1 processed, 1 rejected, 1 already applied.")
    ]
    assert set(Opportunity.objects.values_list("remote_id", flat=True)) == {"opp_applied", "opp_new"}


@pytest.mark.usefixtures("explode_on_boom")
def test_reprocess_failure_does_not_stop_the_others(admin_client):
    boom = WebhookDeliveryFactory(remote_id="opp_boom", status=Outcome.FAILED, http_status=500)
    fine = WebhookDeliveryFactory(remote_id="opp_fine", status=Outcome.FAILED, http_status=500)

    response = reprocess(admin_client, boom, fine)

    assert messages_of(response) == [(constants.WARNING, "Reprocessed 2 deliveries: 1 processed, 1 failed.")]
    boom.refresh_from_db()
    fine.refresh_from_db()
    assert (boom.status, boom.http_status, boom.attempts) == ("failed", 500, 2)
    assert "RuntimeError: receiver exploded" in boom.error
    assert fine.status == "processed"
    # The failed event left nothing behind: neither its opportunity nor its key.
    assert list(Opportunity.objects.values_list("remote_id", flat=True)) == ["opp_fine"]
    assert list(IdempotencyKey.objects.values_list("remote_id", flat=True)) == ["opp_fine"]


def test_reprocess_needs_its_permission(client, staff):
    grant(staff, "view_webhookdelivery")
    delivery = WebhookDeliveryFactory(status=Outcome.FAILED, http_status=500)

    response = client.get(reverse(DELIVERIES))
    assert response.status_code == 200
    assert "reprocess" not in action_names(response)
    assert reprocess(client, delivery).status_code == 200
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert not Opportunity.objects.exists()

    grant(staff, "reprocess_webhookdelivery")

    assert "reprocess" in action_names(client.get(reverse(DELIVERIES)))
    assert messages_of(reprocess(client, delivery)) == [
        (constants.SUCCESS, "Reprocessed 1 delivery: 1 processed.")
    ]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("processed", 2)
    assert Opportunity.objects.filter(remote_id=delivery.remote_id).exists()


def test_delivery_links_to_the_row_it_changed_and_back(admin_client):
    opportunity = OpportunityFactory(remote_id="opp_1")
    delivery = WebhookDeliveryFactory(remote_id="opp_1", idempotency_key="k" * 40)
    elsewhere = WebhookDeliveryFactory(remote_id="opp_1", owner_id="tenant_2")
    unknown = WebhookDeliveryFactory(remote_id="opp_missing")

    content = admin_client.get(reverse(DELIVERIES)).content.decode()
    opportunities = reverse(OPPORTUNITIES)
    exact = "remote_id=opp_1&connector_id=hubspot&owner_id=tenant_1"
    assert f'<a href="{opportunities}?{exact.replace("&", "&amp;")}">opp_1</a>' in content
    # The row, by model, connector, owner and Morph id: another tenant's opp_1 is not it.
    assert listed(admin_client, OPPORTUNITIES, exact) == [opportunity]
    assert listed(admin_client, OPPORTUNITIES, "remote_id=opp_1&connector_id=hubspot&owner_id=tenant_2") == []
    # A long idempotency key is cut short in the list, whole in its tooltip.
    assert f'<span title="{"k" * 40}">{"k" * 15}…</span>' in content

    content = admin_client.get(admin_url(delivery, "change")).content.decode()
    assert f'<a href="{admin_url(opportunity, "change")}">{opportunity} (opportunity)</a>' in content
    assert "Not stored" in admin_client.get(admin_url(elsewhere, "change")).content.decode()
    assert "Not stored" in admin_client.get(admin_url(unknown, "change")).content.decode()
    # ...and back: the row's deliveries.
    assert listed(admin_client, DELIVERIES, exact) == [delivery]


def test_delivery_labels_times_and_search_help(admin_client):
    delivery = WebhookDeliveryFactory(status=Outcome.REJECTED, http_status=400)

    content = admin_client.get(reverse(DELIVERIES)).content.decode()
    assert "An idempotency key or a Morph id, matched exactly (case matters)." in content
    assert "Rejected (400)" in content
    # Received times to the second: deliveries of one minute stay apart.
    received = delivery.received_at.strftime("%Y-%m-%d %H:%M:%S")
    assert f">{received}</a>" in content

    content = admin_client.get(admin_url(delivery, "change")).content.decode()
    for label in ("HTTP status", "Received", "Morph id", "Connector", "Owner (tenant)"):
        assert f">{label}:</label>" in content
    assert "Http status" not in content
    assert f'<div class="readonly">{received}</div>' in content
    assert ">None<" not in content


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            opportunity_event("created", "opp_bad", fields={"amount": "lots"}),
            ("crmOpportunity::created", "opp_bad"),
        ),
        ({"event": "crmOpportunity::created", "data": {"id": 7}}, ("crmOpportunity::created", "")),
        ({"event": ["x"], "data": "opp"}, ("", "")),
        ([1, 2], ("", "")),
        (b"{not json", ("", "")),
        # Escapes of what no column can hold: a NUL, a lone surrogate.
        (b'{"event": "\\u0000", "data": {"id": "\\ud800"}}', ("", "")),
    ],
    ids=["invalid_field", "id_not_a_string", "neither_a_string", "not_an_object", "not_json", "unstorable"],
)
def test_a_rejected_delivery_keeps_what_its_body_named(admin_client, client, body, named):
    assert post_event(client, body).status_code == 400
    delivery = WebhookDelivery.objects.get()

    assert (delivery.event, delivery.remote_id) == named
    if named[1]:
        assert listed(admin_client, DELIVERIES, f"q={named[1]}") == [delivery]


@pytest.mark.parametrize("connections", [2, 2000])
@pytest.mark.parametrize(
    ("changelist", "factory"),
    [
        (DELIVERIES, WebhookDeliveryFactory),
        ("admin:morph_webhooks_idempotencykey_changelist", IdempotencyKeyFactory),
    ],
)
def test_lists_filter_by_connection_in_fixed_queries(
    admin_client, django_assert_num_queries, connections, changelist, factory
):
    Connection.objects.bulk_create(
        Connection(connector_id="hubspot", owner_id=f"tenant_{i:04}") for i in range(connections)
    )
    for i in range(10):
        factory(owner_id=f"tenant_{i % 2:04}")

    # The session, the user, the count, the page, the connection filter's choices; its form or
    # links cost nothing more, however many connections there are.
    with django_assert_num_queries(5):
        response = admin_client.get(reverse(changelist) + "?connector_id=hubspot&owner_id=tenant_0001")

    assert {row.owner_id for row in response.context["cl"].result_list} == {"tenant_0001"}
    assert len(response.context["cl"].result_list) == 5
