from __future__ import annotations

from typing import Any

import pytest

from morph_webhooks.models import Opportunity, Outcome
from morph_webhooks.reprocess import reprocess_many
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing.factories import WebhookDeliveryFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def explode_on_boom():
    def receiver(instance: Opportunity, **kwargs: Any) -> None:
        if instance.remote_id == "opp_boom":
            raise RuntimeError("receiver exploded")

    opportunity_created.connect(receiver, weak=False, dispatch_uid="test-reprocess-boom")
    yield
    opportunity_created.disconnect(dispatch_uid="test-reprocess-boom")


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
