"""Applying a Morph event exactly once, in ``updatedAt`` order, or queueing it for a worker: the
one way a webhook's event changes a mirrored resource (an :class:`Opportunity`...), whoever took
it in (the endpoint, a reprocess, a deferred-mode worker: :mod:`morph_webhooks.intake`); the
signals; and what becomes of a delivery whose processing failed. The writes are
:mod:`morph_webhooks.store`'s.

:func:`process_event` records a failure with the ``on_failure`` it is given: by default
:func:`record_failure` (the request's answer makes Morph retry; a delivery whose key is held for
it dies); a deferred-mode worker passes :func:`retry_later`.

Deferred mode: the queued :class:`WebhookDelivery` rows are the durable record of what is
pending. With ``QUEUE = "tasks"`` each gets a task on TASK_BACKEND that carries nothing but its
id, so a lost task costs a delay (:mod:`morph_webhooks.sweeper` enqueues it again), never an
event; with ``QUEUE = "deliveries"`` no task is enqueued at all: those rows are the queue, which
:mod:`morph_webhooks.worker` reads.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import DatabaseError, connections, router, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from .conf import conf
from .errors import ConcurrentDeliveryError, http_status_for
from .events import MorphEvent, ResourceEvent
from .metrics import observe_processing
from .models import AWAITING_APPLY, Outcome, WebhookDelivery
from .signals import delivery_failed, event_received
from .store import (
    ATTEMPTS,
    AlreadyApplied,
    Collision,
    bound_lock_wait,
    claim_and_record,
    claim_queued_key,
    claims_with_insert,
    correct_key_outcome,
    deadlocked,
    first_delivery,
    lock_in_order,
    locked_row,
    resource_key,
    save_attempt_end,
    save_delivery,
    store_resource,
    supersedes,
    write_resource,
)

logger = logging.getLogger(__name__)

# The task that applies a queued delivery (see _delivery_task).
PROCESS_DELIVERY_TASK = "morph_webhooks.deferred.process_delivery"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    # A reprocess of a delivery that was already settled: nothing was run again.
    already_applied: bool = False
    # Why a reprocess rejected the delivery: the error it recorded.
    reason: str = ""


# What becomes of a delivery whose processing failed, once its transaction has rolled back.
FailureRecorder = Callable[[WebhookDelivery, Exception], None]


def record_failure(delivery: WebhookDelivery, exc: Exception) -> None:
    """A request's delivery fails with the status Morph is answered (Morph retries it). One whose
    key is held for it (a queued delivery replayed outside deferred mode) dies: nothing here would
    run a retry."""
    if delivery.status in AWAITING_APPLY:
        give_up(delivery, exc)
    else:
        delivery.fail(exc, http_status_for(exc))
        save_delivery(delivery)


def give_up(delivery: WebhookDelivery, exc: Exception) -> None:
    delivery.die(exc)
    if save_attempt_end(delivery):
        delivery_failed.send(sender=WebhookDelivery, delivery=delivery, exception=exc)


def process_event(
    event: MorphEvent,
    delivery: WebhookDelivery,
    on_failure: FailureRecorder = record_failure,
    mode: str = "sync",
) -> Result:
    """Apply ``event`` exactly once, in ``updatedAt`` order, and record the outcome on ``delivery``.

    Runs in its own transaction: the idempotency key, the resource, the delivery record and
    whatever signal receivers write are committed together or not at all. On failure
    ``on_failure`` records it on the delivery (with the traceback) and the exception propagates.
    ``mode`` labels the time it took in the metrics: "sync" in the calling process, "deferred" in
    a worker (a task's, or morph_webhooks_worker).
    """
    started = time.perf_counter()
    try:
        return run_atomically(_apply, event, delivery, on_failure)
    finally:
        observe_processing(event, mode, time.perf_counter() - started)


def run_atomically(
    body: Callable[[MorphEvent, WebhookDelivery], Result],
    event: MorphEvent,
    delivery: WebhookDelivery,
    on_failure: FailureRecorder = record_failure,
) -> Result:
    """Run ``body`` in a transaction, starting over after a collision with a concurrent twin.

    ``body`` bounds its lock waits itself, before its first statement that may wait for a lock:
    with :func:`first_delivery` as that statement (it carries LOCK_TIMEOUT), otherwise with
    :func:`bound_lock_wait`."""
    # What the delivery was before this run: a rolled-back run's changes to it never happened.
    outcome_before = delivery.status
    try:
        for _ in range(ATTEMPTS):
            # Each attempt starts from the delivery as it was: a rolled-back one may have settled
            # it in memory (a deadlock at its own write), and a queued delivery would then be
            # taken for a new delivery of its held key, a duplicate, and its event never applied.
            delivery.status = outcome_before
            committed = _Committed()
            try:
                with transaction.atomic():
                    # The first callback to run after the commit, before any receiver's: once it
                    # has run, the event is stored whatever fails next.
                    transaction.on_commit(committed.mark)
                    result = body(event, delivery)
            except Collision:
                continue
            except AlreadyApplied:
                # Another run of this very delivery (a task delivered twice) got there first.
                return Result(Outcome.DUPLICATE)
            except Exception as exc:
                if not committed:
                    if deadlocked(exc):
                        continue
                    raise
                # Only a receiver's transaction.on_commit callback failed, after the commit.
                # Answering 5xx (or recording a failure) would make Morph retry an event that is
                # already stored, and the retry would be answered as a duplicate.
                logger.exception(
                    "A transaction.on_commit callback failed after %s was stored", event.idempotency_key
                )
            return result
        raise ConcurrentDeliveryError(
            f"gave up after {ATTEMPTS} collisions or deadlocks with concurrent deliveries"
        )
    except Exception as exc:
        delivery.status = outcome_before
        _record_failure(delivery, exc, on_failure)
        raise


class _Committed:
    """Whether the transaction it was registered in (with ``transaction.on_commit``) committed."""

    def __init__(self) -> None:
        self.done = False

    def mark(self) -> None:
        self.done = True

    def __bool__(self) -> bool:
        return self.done


def _apply(event: MorphEvent, delivery: WebhookDelivery) -> Result:
    # A queued delivery's key was claimed when it arrived: it is this run's to settle.
    queued = delivery.status in AWAITING_APPLY
    if queued:
        bound_lock_wait()
    # Claimed as if it were to be applied: only a stale event changes the key's outcome after.
    elif not first_delivery(
        event, Outcome.PROCESSED if isinstance(event, ResourceEvent) else Outcome.IGNORED
    ):
        return settle(event, delivery, Outcome.DUPLICATE)
    if not isinstance(event, ResourceEvent):
        if queued:
            claim_queued_key(event, Outcome.IGNORED)
        return settle(event, delivery, Outcome.IGNORED)

    # The row lock orders concurrent events for one resource; the key's unique index orders
    # concurrent deliveries of one event.
    if event.related:
        # Its expanded references' rows too, all locked first, in the one order.
        locked = lock_in_order(event.connector_id, event.owner_id, map(resource_key, (event, *event.related)))
        # Stored first, under their own updatedAt and with their own signals, so that the event's
        # receivers find them (a deal's new stage).
        for related in event.related:
            store_resource(related, locked)
        row = locked[resource_key(event)]
    else:
        row = locked_row(event)
    if row is not None and not supersedes(event, row):
        if queued:
            claim_queued_key(event, Outcome.STALE)
        else:
            correct_key_outcome(event, Outcome.STALE)
        return settle(event, delivery, Outcome.STALE)
    if queued:
        claim_queued_key(event, Outcome.PROCESSED)
    write_resource(event, row)
    return settle(event, delivery, Outcome.PROCESSED)


def settle(event: MorphEvent, delivery: WebhookDelivery, outcome: Outcome) -> Result:
    if outcome in (Outcome.PROCESSED, Outcome.IGNORED):
        # After the resource's own signals: a receiver finds the event's row stored.
        event_received.send(
            sender=MorphEvent,
            event=event,
            outcome=outcome.value,
            connector_id=event.connector_id,
            owner_id=event.owner_id,
        )
    delivery.finish(outcome, _ignored_keys_note(event))
    save_delivery(delivery)
    return Result(outcome)


def _ignored_keys_note(event: MorphEvent) -> str:
    """What the delivery log shows of keys the app did not read: a typo such as ``data.fileds``
    is found where the request is, not only in a log file."""
    if not event.ignored_keys:
        return ""
    logger.warning("Morph event %r: ignored unknown keys %r", event.idempotency_key, event.ignored_keys)
    message = "Not a key Morph sends; ignored."
    return json.dumps({"warnings": {key: [message] for key in event.ignored_keys}})


def _record_failure(delivery: WebhookDelivery, exc: Exception, on_failure: FailureRecorder) -> None:
    connection = connections[router.db_for_write(WebhookDelivery)]
    if not connection.in_atomic_block and connection.connection is not None and not connection.is_usable():
        # The connection died mid-transaction (server restart, failover, killed backend): a new
        # one can still record why, as Django would open at the next request anyway.
        connection.close()
    try:
        on_failure(delivery, exc)
    except DatabaseError:
        # The database is what failed; the original error is what the caller needs to see.
        logger.exception("Could not record failed delivery %s", delivery.idempotency_key)


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
    if delivery.pk is None and claims_with_insert():
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
    # Looked up by its path, as django.contrib.sessions finds its engine: the task's module loads
    # the task framework and its backend, which sync mode and QUEUE = "deliveries" must not need,
    # and it imports the workers' code, which imports this module.
    task: Any = import_string(PROCESS_DELIVERY_TASK)
    return task.using(backend=conf.TASK_BACKEND, queue_name=conf.TASK_QUEUE)


def stores_tasks_in_the_database(backend: Any) -> bool:
    return type(backend).__module__.partition(".")[0] == "django_tasks_db"
