"""Which events are accepted once the caller is authenticated: on a request and on a replay."""

from __future__ import annotations

import json

import pytest

from morph_webhooks.models import Opportunity, WebhookDelivery
from morph_webhooks.reprocess import reprocess_delivery
from morph_webhooks.testing import opportunity_event
from morph_webhooks.testing.factories import WebhookDeliveryFactory
from morph_webhooks.worker import Worker
from tests.helpers import SECRET, raw_post

pytestmark = pytest.mark.django_db


class TestAllowedConnectorsAndOwners:
    @pytest.fixture(autouse=True)
    def allow(self, settings):
        settings.MORPH_WEBHOOKS = {
            "SECRETS": [SECRET],
            "ALLOWED_CONNECTORS": ["hubspot"],
            "ALLOWED_OWNERS": ["tenant_1"],
        }

    def test_allowed(self, client):
        assert (
            raw_post(
                client, json.dumps(opportunity_event()).encode(), Authorization=f"Bearer {SECRET}"
            ).status_code
            == 200
        )

    @pytest.mark.parametrize("headers", [{"x-conector-id": "salesforce"}, {"x-owner-id": "tenant_2"}])
    def test_others_are_403_and_logged_as_rejected(self, client, headers):
        response = raw_post(
            client, json.dumps(opportunity_event()).encode(), Authorization=f"Bearer {SECRET}", **headers
        )

        assert response.status_code == 403
        assert WebhookDelivery.objects.get().status == "rejected"
        assert Opportunity.objects.count() == 0


def test_reprocess_applies_the_endpoint_policy(admin_client, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "ALLOWED_CONNECTORS": ["salesforce"]}
    delivery = WebhookDeliveryFactory(status="rejected", http_status=403)

    reprocess_delivery(delivery)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status) == ("rejected", 403)
    assert "permission_denied" in delivery.error
    assert Opportunity.objects.count() == 0


def test_a_worker_applies_what_the_endpoint_let_in(send, settings):
    # Queued while the connector was let in, applied after it no longer is: its key is claimed,
    # and the endpoint's answer stands.
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
    assert send(opportunity_event()).json() == {"status": "queued"}
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "ALLOWED_CONNECTORS": ["salesforce"]}

    assert Worker(until_empty=True).run() == 1

    assert WebhookDelivery.objects.get().status == "processed"
    assert Opportunity.objects.count() == 1
