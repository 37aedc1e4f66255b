from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import factory
from factory.django import DjangoModelFactory

from morph_webhooks.models import IdempotencyKey, Opportunity, Outcome, WebhookDelivery
from morph_webhooks.testing import morph_headers, opportunity_event

T0 = datetime(2025, 3, 6, 9, 0, tzinfo=timezone.utc)


class OpportunityFactory(DjangoModelFactory):
    class Meta:
        model = Opportunity

    connector_id = "hubspot"
    owner_id = "tenant_1"
    remote_id = factory.Sequence(lambda n: f"opp_{n}")
    name = factory.Sequence(lambda n: f"Opportunity {n}")
    amount = Decimal("12500")
    currency = "EUR"
    stage_id = "stage_qualified"
    pipeline_id = "pipeline_sales"
    remote_created_at = T0
    remote_updated_at = T0


class IdempotencyKeyFactory(DjangoModelFactory):
    class Meta:
        model = IdempotencyKey

    connector_id = "hubspot"
    owner_id = "tenant_1"
    key = factory.Sequence(lambda n: f"key_{n}")
    event = "crmOpportunity::created"
    remote_id = factory.Sequence(lambda n: f"opp_{n}")
    outcome = Outcome.PROCESSED


class WebhookDeliveryFactory(DjangoModelFactory):
    """A logged request carrying a valid ``crmOpportunity::created`` event for ``remote_id``."""

    class Meta:
        model = WebhookDelivery

    class Params:
        payload = factory.LazyAttribute(lambda o: opportunity_event("created", o.remote_id))

    connector_id = "hubspot"
    owner_id = "tenant_1"
    idempotency_key = factory.Sequence(lambda n: f"delivery_key_{n}")
    remote_id = factory.Sequence(lambda n: f"opp_{n}")
    event = factory.LazyAttribute(lambda o: o.payload["event"])
    path = "/webhooks/morph/"
    headers = factory.LazyAttribute(
        lambda o: {
            **morph_headers(o.idempotency_key, o.connector_id, o.owner_id),
            "content-type": "application/json",
        }
    )
    body = factory.LazyAttribute(lambda o: json.dumps(o.payload))
    status = Outcome.PROCESSED
    http_status = 200
