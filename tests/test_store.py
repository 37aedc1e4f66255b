"""A delivery's transitions change it in memory; morph_webhooks.store writes them."""

from __future__ import annotations

import pytest
from django.utils import timezone

from morph_webhooks.models import Outcome, WebhookDelivery
from morph_webhooks.store import save_attempt_end, save_delivery
from morph_webhooks.testing.factories import WebhookDeliveryFactory

pytestmark = pytest.mark.django_db


def test_a_transition_writes_nothing_until_stored(django_assert_num_queries):
    delivery = WebhookDelivery.received(
        "127.0.0.1", "/webhooks/morph/", {"x-owner-id": "tenant_1"}, "hubspot"
    )

    with django_assert_num_queries(0):
        delivery.reject(400, {"fields": {"event": ["This field is required."]}})
    assert not WebhookDelivery.objects.exists()

    save_delivery(delivery)
    stored = WebhookDelivery.objects.get()
    assert (stored.status, stored.http_status, stored.owner_id) == ("rejected", 400, "tenant_1")


def test_an_attempt_ends_only_while_queued(django_assert_num_queries):
    queued = WebhookDeliveryFactory(status=Outcome.QUEUED, attempts=1, next_attempt_at=timezone.now())
    settled = WebhookDeliveryFactory(status=Outcome.QUEUED, attempts=1, next_attempt_at=timezone.now())
    # Applied meanwhile by a concurrent run of the same delivery.
    WebhookDelivery.objects.filter(pk=settled.pk).update(status=Outcome.PROCESSED)

    with django_assert_num_queries(0):
        queued.die(RuntimeError("boom"))
        settled.die(RuntimeError("boom"))

    assert save_attempt_end(queued) and not save_attempt_end(settled)
    assert WebhookDelivery.objects.get(pk=queued.pk).status == "dead"
    assert WebhookDelivery.objects.get(pk=settled.pk).status == "processed"
