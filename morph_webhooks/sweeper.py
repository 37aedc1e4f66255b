"""Deferred mode's sweeper (``morph_webhooks_sweep``, or the task ``sweep_pending``): queued
deliveries whose task was lost, or whose worker died, enqueued again."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .apply import enqueue_delivery
from .conf import conf
from .models import Outcome, WebhookDelivery


def sweep(older_than: float | None = None) -> int:
    """Enqueue again every queued delivery overdue by more than ``older_than`` seconds (default
    PENDING_TIMEOUT): its task was lost, or its worker died. Returns how many.

    With ``QUEUE = "deliveries"`` there is no task to lose: morph_webhooks_worker takes every
    delivery that is due. Nothing is changed then, and the overdue deliveries are counted: making
    them due "now" would put them behind newer ones and hide from the health check how long they
    have waited (no worker is running)."""
    cutoff = timezone.now() - timedelta(seconds=conf.PENDING_TIMEOUT if older_than is None else older_than)
    overdue = WebhookDelivery.objects.filter(status=Outcome.QUEUED, next_attempt_at__lt=cutoff)
    if conf.QUEUE == "deliveries":
        return overdue.count()
    count = 0
    for delivery in overdue.only("pk").iterator():
        with transaction.atomic():
            # Claim it for this sweep first, so that a concurrent sweep does not enqueue it too.
            if not WebhookDelivery.objects.filter(
                pk=delivery.pk, status=Outcome.QUEUED, next_attempt_at__lt=cutoff
            ).update(next_attempt_at=timezone.now()):
                continue
            enqueue_delivery(delivery)
            count += 1
    return count
