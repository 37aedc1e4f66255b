"""Deferred mode's queue: queueing a delivery, a worker's run of it, retries and the sweeper.

The queued :class:`WebhookDelivery` rows are the durable record of what is pending. With
``QUEUE = "tasks"`` each gets a task on TASK_BACKEND that carries nothing but its id, so a lost
task costs a delay (the sweeper enqueues it again), never an event; with ``QUEUE = "deliveries"``
no task is enqueued at all: those rows are the queue, which :mod:`morph_webhooks.worker` reads.

The tasks are declared in :mod:`morph_webhooks.deferred`, which loads the task backend; this
module imports it only to enqueue a task (``QUEUE = "tasks"``), so the deliveries queue needs no
tasks framework.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from .apply import Result, give_up, process_event, run_atomically, settle
from .conf import conf
from .events import MorphEvent
from .models import AWAITING_APPLY, IdempotencyKey, Outcome, WebhookDelivery
from .statements import claims_with_insert
from .store import claim_and_record, first_delivery, save_attempt_end, save_delivery


def apply_or_queue(event: MorphEvent, delivery: WebhookDelivery) -> Result:
    """Apply an accepted event here, or in deferred mode queue it for a worker: a request's, or a
    logged delivery's that is reprocessed."""
    if not conf.DEFERRED:
        return process_event(event, delivery)
    if delivery.status in AWAITING_APPLY:
        # Its key is held for it already (queued, or dead): queued again, from its first attempt.
        return requeue(delivery)
    return queue_event(event, delivery)


def queue_event(event: MorphEvent, delivery: WebhookDelivery) -> Result:
    """Claim the key and record the delivery as queued (with ``QUEUE = "tasks"``, enqueue a task
    that will apply it), all in one transaction. A duplicate is answered at once."""
    return run_atomically(_queue, event, delivery)


def _queue(event: MorphEvent, delivery: WebhookDelivery) -> Result:
    if delivery.pk is None and claims_with_insert(IdempotencyKey, WebhookDelivery):
        # A request's delivery, not stored yet: recorded as queued by the claim's own statement,
        # then put back as it arrived should the claim fail or find a duplicate.
        attempts = delivery.attempts
        delivery.queue()
        claimed = False
        try:
            claimed = claim_and_record(event, delivery)
        finally:
            if not claimed:
                delivery.attempts, delivery.next_attempt_at = attempts, None
    else:
        # Stored already (a logged delivery reprocessed), or SQLite: written once the claim is known.
        claimed = first_delivery(event, Outcome.QUEUED)
        if claimed:
            delivery.queue()
            save_delivery(delivery)
    if not claimed:
        return settle(event, delivery, Outcome.DUPLICATE)
    enqueue_delivery(delivery)
    return Result(Outcome.QUEUED)


def requeue(delivery: WebhookDelivery) -> Result:
    """Queue again a delivery whose key is held for it (queued or dead), from its first attempt."""
    with transaction.atomic():
        delivery.queue()
        save_delivery(delivery)
        enqueue_delivery(delivery)
    return Result(Outcome.QUEUED)


def retry_later(delivery: WebhookDelivery, exc: Exception) -> None:
    """A worker's attempt at a queued delivery failed: try again after an exponential backoff, or
    give up after MAX_ATTEMPTS."""
    # Outside deferred mode nothing would run a retry.
    if not conf.DEFERRED or delivery.attempts >= conf.MAX_ATTEMPTS:
        give_up(delivery, exc)
        return
    delay = min(conf.RETRY_DELAY * 2 ** max(delivery.attempts - 1, 0), conf.MAX_RETRY_DELAY)
    delivery.schedule_retry(exc, timezone.now() + timedelta(seconds=delay))
    if save_attempt_end(delivery):
        enqueue_delivery(delivery, run_after=delivery.next_attempt_at)


def enqueue_delivery(delivery: WebhookDelivery, run_after: datetime | None = None) -> None:
    if conf.QUEUE == "deliveries":
        # morph_webhooks_worker reads the queued deliveries that are due (next_attempt_at): the
        # row the caller wrote is all it needs.
        return
    queued = conf.derived(_delivery_task)
    if run_after is not None:
        queued = queued.using(run_after=run_after)
    if stores_tasks_in_the_database(queued.get_backend()):
        # The task row commits or rolls back with the delivery: exactly one task per delivery.
        queued.enqueue(delivery.pk)
    else:
        # An outside queue cannot join our transaction: enqueue once the delivery is committed.
        # Should the process die in between, the delivery stays queued and the sweeper
        # enqueues it again; running a delivery twice is harmless (its key settles it once).
        transaction.on_commit(partial(queued.enqueue, delivery.pk))


def _delivery_task() -> Any:
    # The task as the settings configure it, made once per change of them: every request enqueues it.
    from .deferred import process_delivery

    return process_delivery.using(backend=conf.TASK_BACKEND, queue_name=conf.TASK_QUEUE)


def stores_tasks_in_the_database(backend: Any) -> bool:
    return type(backend).__module__.partition(".")[0] == "django_tasks_db"


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
