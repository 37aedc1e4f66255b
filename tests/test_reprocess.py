from __future__ import annotations

import json

import pytest

from morph_webhooks.apply import Result
from morph_webhooks.models import IdempotencyKey, Opportunity, Outcome, WebhookDelivery
from morph_webhooks.reprocess import reprocess_delivery, reprocess_many
from morph_webhooks.testing import opportunity_event
from morph_webhooks.testing.factories import WebhookDeliveryFactory

pytestmark = pytest.mark.django_db


@pytest.mark.usefixtures("explode_on_boom")
def test_reprocess_many_counts_each_outcome_and_goes_on_after_a_failure():
    settled = WebhookDeliveryFactory()
    refused = WebhookDeliveryFactory(status=Outcome.REJECTED, http_status=413)
    boom = WebhookDeliveryFactory(remote_id="opp_boom", status=Outcome.FAILED, http_status=500)
    fine = WebhookDeliveryFactory(remote_id="opp_fine", status=Outcome.FAILED, http_status=500)
    failures, progress = [], []

    summary = reprocess_many(
        [settled, refused, boom, fine],
        on_failure=lambda delivery, exc: failures.append((delivery.pk, str(exc))),
        after_each=lambda done, counts: progress.append((done, sum(counts.values()))),
    )

    assert summary == {"already applied": 1, "rejected": 1, "failed": 1, "processed": 1}
    assert failures == [(boom.pk, "receiver exploded")]
    assert progress == [(1, 1), (2, 2), (3, 3), (4, 4)]
    boom.refresh_from_db()
    assert (boom.status, boom.http_status) == ("failed", 500)


@pytest.mark.parametrize("http_status", [413, 415])
def test_refused_requests_are_not_reprocessed(http_status):
    delivery = WebhookDeliveryFactory(status="rejected", http_status=http_status, error="original")

    assert reprocess_delivery(delivery) == Result(Outcome.REJECTED, reason="original")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status, delivery.error, delivery.attempts) == (
        "rejected",
        http_status,
        "original",
        1,
    )
    assert Opportunity.objects.count() == 0


@pytest.mark.parametrize("name", [b"caf\xe9", b"caf\x00"], ids=["not_utf8", "nul"])
def test_reprocess_reads_the_body_as_received_not_its_stored_text(send, name):
    body = json.dumps(opportunity_event(fields={"name": "NAME"})).encode().replace(b"NAME", name)
    assert send(body, key="k1").status_code == 400
    delivery = WebhookDelivery.objects.get()
    # The text shown in the admin had to replace what it could not hold...
    assert "caf\ufffd" in delivery.body
    assert bytes(delivery.raw_body) == body

    # ... and would be a valid event: the reprocess must see the bytes Morph sent instead.
    assert reprocess_delivery(delivery).outcome == Outcome.REJECTED
    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status) == ("rejected", 400)
    assert json.loads(delivery.error)["fields"]["body"]
    assert not Opportunity.objects.exists()
    assert not IdempotencyKey.objects.exists()


def test_a_faithfully_stored_body_is_kept_once(send):
    send(opportunity_event(fields={"name": "café"}))

    assert WebhookDelivery.objects.get().raw_body is None
