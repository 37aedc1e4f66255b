"""Deferred processing on Django's Tasks framework (``django.tasks``, or the ``django-tasks``
backport on Django 5.2).

Only imported in deferred mode. The queued :class:`WebhookDelivery` rows are the durable record
of what is pending: a task carries nothing but a delivery's id, so a lost task costs a delay
(the sweeper enqueues it again), never an event.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from .conf import conf
from .models import Outcome, WebhookDelivery

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    from django_tasks import task  # type: ignore[no-redef,import-not-found,unused-ignore]


@task()
def process_delivery(delivery_id: int) -> str | None:
    from .processing import run_delivery

    outcome = run_delivery(delivery_id)
    return None if outcome is None else str(outcome)


@task()
def sweep_pending() -> int:
    return sweep()


def enqueue_delivery(delivery: WebhookDelivery, run_after: datetime | None = None) -> None:
    queued = process_delivery.using(
        backend=conf.TASK_BACKEND, queue_name=conf.TASK_QUEUE, run_after=run_after
    )
    if _stores_tasks_in_the_database(queued.get_backend()):
        # The task row commits or rolls back with the delivery: exactly one task per delivery.
        queued.enqueue(delivery.pk)
    else:
        # An outside queue cannot join our transaction: enqueue once the delivery is committed.
        # Should the process die in between, the delivery stays queued and the sweeper
        # enqueues it again; running a delivery twice is harmless (its key settles it once).
        transaction.on_commit(partial(queued.enqueue, delivery.pk))


def _stores_tasks_in_the_database(backend: Any) -> bool:
    return type(backend).__module__.partition(".")[0] == "django_tasks_db"


def sweep(older_than: float | None = None) -> int:
    """Enqueue again every queued delivery overdue by more than ``older_than`` seconds (default
    PENDING_TIMEOUT): its task was lost, or its worker died. Returns how many."""
    cutoff = timezone.now() - timedelta(seconds=conf.PENDING_TIMEOUT if older_than is None else older_than)
    overdue = WebhookDelivery.objects.filter(status=Outcome.QUEUED, next_attempt_at__lt=cutoff)
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
