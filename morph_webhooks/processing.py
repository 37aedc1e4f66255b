"""The one function that applies a Morph event.

The endpoint, the admin's reprocess action and anything else that replays an event call
:func:`process_event`; nothing else writes a mirrored resource (an :class:`Opportunity`...).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    router,
    transaction,
)
from django.db.models import F
from django.utils import timezone
from rest_framework.exceptions import PermissionDenied

from .auth import check_allowed
from .conf import conf
from .events import InvalidEvent, MorphEvent, ResourceEvent, parse_event
from .models import PENDING, IdempotencyKey, MirroredResource, Outcome, WebhookDelivery
from .signals import delivery_failed

logger = logging.getLogger(__name__)

# A collision (a concurrent twin took the key, or created the opportunity first) is resolved by
# starting over: the next attempt sees the committed row. More than a few in a row is pathological.
ATTEMPTS = 3


@dataclass(frozen=True)
class Result:
    status: Outcome
    row: MirroredResource | None = None
    created: bool = False
    # A reprocess of a delivery that was already settled: nothing was run again.
    already_applied: bool = False


class ConcurrentDeliveryError(Exception):
    """Concurrent deliveries kept colliding; a retry will succeed."""


class _Collision(Exception):
    pass


class _AlreadyApplied(Exception):
    pass


def process_event(event: MorphEvent, delivery: WebhookDelivery | None = None) -> Result:
    """Apply ``event`` exactly once, in ``updatedAt`` order, and record the outcome on ``delivery``.

    Runs in its own transaction: the idempotency key, the resource, the delivery record and
    whatever signal receivers write are committed together or not at all. On failure the
    delivery is saved as failed (or, in deferred mode, scheduled for a retry) with the
    traceback, and the exception propagates.
    """
    return _run(_apply, event, delivery)


def queue_event(event: MorphEvent, delivery: WebhookDelivery) -> Result:
    """Deferred mode: claim the key, record the delivery as queued and enqueue a task that will
    call :func:`process_event`, all in one transaction. A duplicate is answered at once."""
    return _run(_queue, event, delivery)


def _run(
    body: Callable[[MorphEvent, WebhookDelivery | None], Result],
    event: MorphEvent,
    delivery: WebhookDelivery | None,
) -> Result:
    # What the delivery was before this run: a rolled-back run's changes to it never happened.
    status_before = delivery.status if delivery is not None else ""
    try:
        for _ in range(ATTEMPTS):
            committed = _Committed()
            try:
                with transaction.atomic():
                    # The first callback to run after the commit, before any receiver's: once it
                    # has run, the event is stored whatever fails next.
                    transaction.on_commit(committed.mark)
                    _bound_lock_wait()
                    result = body(event, delivery)
            except _Collision:
                continue
            except _AlreadyApplied:
                # Another run of this very delivery (a task delivered twice) got there first.
                return Result(Outcome.DUPLICATE)
            except Exception:
                if not committed:
                    raise
                # Only a receiver's transaction.on_commit callback failed, after the commit.
                # Answering 5xx (or recording a failure) would make Morph retry an event that is
                # already stored, and the retry would be answered as a duplicate.
                logger.exception(
                    "A transaction.on_commit callback failed after %s was stored", event.idempotency_key
                )
            return result
        raise ConcurrentDeliveryError(f"gave up after {ATTEMPTS} collisions with concurrent deliveries")
    except Exception as exc:
        if delivery is not None:
            delivery.status = status_before
            _record_failure(delivery, exc)
        raise


class _Committed:
    """Whether the transaction it was registered in (with ``transaction.on_commit``) committed."""

    def __init__(self) -> None:
        self.done = False

    def mark(self) -> None:
        self.done = True

    def __bool__(self) -> bool:
        return self.done


def _bound_lock_wait() -> None:
    """Give up waiting for a lock after LOCK_TIMEOUT seconds, for the rest of this transaction.

    A lock held elsewhere (a long transaction, a migration) would otherwise keep the request
    waiting until the web server kills the worker, and Morph would get an HTML 500 with nothing
    logged; a lock timeout is an OperationalError, answered 503 so that Morph retries. SQLite has
    no such setting: there the connection's busy timeout (its ``timeout`` option) bounds the wait.
    """
    connection = connections[router.db_for_write(IdempotencyKey)]
    if connection.vendor == "postgresql" and conf.LOCK_TIMEOUT > 0:
        with connection.cursor() as cursor:
            # SET LOCAL lasts until the transaction ends (the outer one, when nested); the session's
            # own setting, which the project may rely on elsewhere, is left as it was.
            cursor.execute(f"SET LOCAL lock_timeout = '{max(round(conf.LOCK_TIMEOUT * 1000), 1)}ms'")


def http_status_for(exc: BaseException) -> int:
    """503 where a retry can succeed on its own (database down, lock timeout), 500 otherwise."""
    return 503 if isinstance(exc, (OperationalError, InterfaceError, ConcurrentDeliveryError)) else 500


def _queue(event: MorphEvent, delivery: WebhookDelivery | None) -> Result:
    assert delivery is not None
    if _count_redelivery(event):
        return _finish(event, delivery, Result(Outcome.DUPLICATE))
    _claim(event, Outcome.QUEUED)
    delivery.status = Outcome.QUEUED
    delivery.http_status = 200
    delivery.attempts = 0
    delivery.next_attempt_at = timezone.now()
    delivery.save()
    from .tasks import enqueue_delivery

    enqueue_delivery(delivery)
    return Result(Outcome.QUEUED)


def _apply(event: MorphEvent, delivery: WebhookDelivery | None) -> Result:
    # A queued delivery's key was claimed when it arrived: it is this run's to settle.
    queued = delivery is not None and delivery.status in PENDING
    if not queued and _count_redelivery(event):
        return _finish(event, delivery, Result(Outcome.DUPLICATE))
    if not isinstance(event, ResourceEvent):
        _claim(event, Outcome.IGNORED, queued)
        return _finish(event, delivery, Result(Outcome.IGNORED))

    # The row lock orders concurrent events for one resource; the key's unique index orders
    # concurrent deliveries of one event.
    model = event.spec.model
    row = (
        model._default_manager.select_for_update()
        .filter(connector_id=event.connector_id, owner_id=event.owner_id, remote_id=event.remote_id)
        .first()
    )
    if row is not None and not _supersedes(event, row):
        _claim(event, Outcome.STALE, queued)
        return _finish(event, delivery, Result(Outcome.STALE, row))

    _claim(event, Outcome.PROCESSED, queued)
    created = row is None
    if row is None:
        row = model(connector_id=event.connector_id, owner_id=event.owner_id, remote_id=event.remote_id)
    _copy_event(event, row)
    if created:
        try:
            row.save(force_insert=True)
        except IntegrityError as exc:
            raise _Collision from exc
    else:
        row.save()
    event.spec.signals[event.action].send(sender=model, instance=row, event=event, created=created)
    return _finish(event, delivery, Result(Outcome.PROCESSED, row, created))


def _count_redelivery(event: MorphEvent) -> bool:
    updated = IdempotencyKey.objects.filter(
        connector_id=event.connector_id, owner_id=event.owner_id, key=event.idempotency_key
    ).update(deliveries=F("deliveries") + 1, last_seen_at=timezone.now())
    return updated > 0


def _claim(event: MorphEvent, outcome: Outcome, queued: bool = False) -> None:
    key = IdempotencyKey.objects.filter(
        connector_id=event.connector_id, owner_id=event.owner_id, key=event.idempotency_key
    )
    # The row lock taken by this update is what keeps two runs of one queued delivery apart: the
    # second waits, then finds the key settled and changes nothing.
    if queued and key.filter(outcome=Outcome.QUEUED).update(outcome=outcome):
        return
    try:
        IdempotencyKey.objects.create(
            connector_id=event.connector_id,
            owner_id=event.owner_id,
            key=event.idempotency_key,
            event=event.type,
            remote_id=event.remote_id,
            outcome=outcome,
        )
    except IntegrityError as exc:
        # A concurrent twin committed first: the next attempt counts this one as its duplicate.
        raise (_AlreadyApplied if queued else _Collision) from exc


def _supersedes(event: ResourceEvent, row: MirroredResource) -> bool:
    """Whether ``event`` is newer than what is stored.

    The newer ``updatedAt`` wins. At an equal ``updatedAt`` only a delete of a live row applies:
    CRMs do not always bump ``updatedAt`` when deleting, while a create or update with the same
    ``updatedAt`` describes the version already stored (typically a re-sent notification).
    """
    if event.remote_updated_at != row.remote_updated_at:
        return event.remote_updated_at > row.remote_updated_at
    return event.action == "deleted" and row.deleted_at is None


def _copy_event(event: ResourceEvent, row: MirroredResource) -> None:
    # Only the fields present in the payload change: a partial update must not erase the rest.
    # Fields without a column are merged key by key for the same reason (a null is kept as null,
    # as a modelled field's null clears it).
    for name, value in event.changes.items():
        if name == "extra_fields":
            value = {**row.extra_fields, **value}
        setattr(row, name, value)
    row.remote_created_at = event.remote_created_at
    row.remote_updated_at = event.remote_updated_at
    if event.action == "deleted":
        row.deleted_at = row.deleted_at or timezone.now()
    else:
        row.deleted_at = None


def _finish(event: MorphEvent, delivery: WebhookDelivery | None, result: Result) -> Result:
    if delivery is not None:
        delivery.status = result.status
        delivery.http_status = 200
        delivery.error = _ignored_keys_note(event)
        delivery.next_attempt_at = None
        delivery.processed_at = timezone.now()
        delivery.save()
    return result


def _ignored_keys_note(event: MorphEvent) -> str:
    """What the delivery log shows of keys the app did not read: a typo such as ``data.fileds``
    is found where the request is, not only in a log file."""
    if not event.ignored_keys:
        return ""
    logger.warning("Morph event %r: ignored unknown keys %r", event.idempotency_key, event.ignored_keys)
    message = "Not a key Morph sends; ignored."
    return json.dumps({"warnings": {key: [message] for key in event.ignored_keys}})


def _record_failure(delivery: WebhookDelivery, exc: Exception) -> None:
    connection = connections[router.db_for_write(WebhookDelivery)]
    if not connection.in_atomic_block and connection.connection is not None and not connection.is_usable():
        # The connection died mid-transaction (server restart, failover, killed backend): a new
        # one can still record why, as Django would open at the next request anyway.
        connection.close()
    try:
        if delivery.status == Outcome.QUEUED:
            _schedule_retry(delivery, exc)
        else:
            delivery.status = Outcome.FAILED
            delivery.http_status = http_status_for(exc)
            delivery.error = _traceback(exc)
            delivery.processed_at = None
            delivery.save()
    except DatabaseError:
        # The database is what failed; the original error is what the caller needs to see.
        logger.exception("Could not record failed delivery %s", delivery.idempotency_key)


def _schedule_retry(delivery: WebhookDelivery, exc: Exception) -> None:
    """Deferred mode: try again after an exponential backoff, or give up after MAX_ATTEMPTS."""
    # Outside deferred mode (a queued delivery reprocessed by hand) nothing would run a retry.
    dead = not conf.DEFERRED or delivery.attempts >= conf.MAX_ATTEMPTS
    delay = min(conf.RETRY_DELAY * 2 ** max(delivery.attempts - 1, 0), conf.MAX_RETRY_DELAY)
    delivery.error = _traceback(exc)
    delivery.status = Outcome.DEAD if dead else Outcome.QUEUED
    delivery.next_attempt_at = None if dead else timezone.now() + timedelta(seconds=delay)
    # Only while still queued: a concurrent run of the same delivery may have succeeded meanwhile.
    updated = WebhookDelivery.objects.filter(pk=delivery.pk, status=Outcome.QUEUED).update(
        status=delivery.status,
        error=delivery.error,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
    )
    if not updated:
        return
    if dead:
        delivery_failed.send(sender=WebhookDelivery, delivery=delivery, exception=exc)
    else:
        from .tasks import enqueue_delivery

        enqueue_delivery(delivery, run_after=delivery.next_attempt_at)


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


# Refusals of the request itself (no length or too large: no body was kept; not JSON): nothing to re-read.
REFUSED_REQUESTS = (411, 413, 415)
# Deliveries whose event was settled when they ran: applied, found stale or ignored by them, or
# already applied by another delivery of the same key. Their outcome is history and stays.
SETTLED = (Outcome.PROCESSED, Outcome.STALE, Outcome.IGNORED, Outcome.DUPLICATE)
ALREADY_APPLIED = "already applied"


def reprocess_delivery(delivery: WebhookDelivery) -> Result | None:
    """Run a logged request through validation and processing again.

    Returns ``None`` when the request is still invalid (the delivery stays rejected, with the
    current error). A settled delivery keeps its outcome and its key is not counted again: the
    result says it was already applied. A failed delivery whose event another delivery applied
    meanwhile becomes a duplicate, exactly as a re-sent one. In deferred mode the delivery is
    queued for a worker again rather than processed here.
    """
    if delivery.http_status in REFUSED_REQUESTS:
        return None
    delivery.reprocessed_at = timezone.now()
    if delivery.status in SETTLED:
        delivery.save(update_fields=["reprocessed_at"])
        return Result(Outcome(delivery.status), already_applied=True)
    try:
        event = parse_event(delivery.headers, delivery.received_body())
        # The same policy as the endpoint: a replay must not let in what a request could not.
        check_allowed(event)
    except InvalidEvent as exc:
        delivery.attempts += 1
        delivery.reject(400, exc.detail)
        return None
    except PermissionDenied as exc:
        delivery.attempts += 1
        delivery.reject(403, {"error": "permission_denied", "detail": exc.detail})
        return None
    delivery.event, delivery.remote_id = event.type, event.remote_id
    if delivery.status in PENDING:
        if conf.DEFERRED:
            return _requeue(delivery)
        delivery.status = Outcome.QUEUED
    elif conf.DEFERRED:
        return queue_event(event, delivery)
    delivery.attempts += 1
    return process_event(event, delivery)


def reprocess_outcome(result: Result | None) -> str:
    """What one reprocess came to, in the words of the admin's message and the command's output."""
    if result is None:
        return Outcome.REJECTED
    return ALREADY_APPLIED if result.already_applied else result.status


def _requeue(delivery: WebhookDelivery) -> Result:
    from .tasks import enqueue_delivery

    with transaction.atomic():
        delivery.status = Outcome.QUEUED
        delivery.attempts = 0
        delivery.next_attempt_at = timezone.now()
        delivery.save(
            update_fields=["status", "attempts", "next_attempt_at", "event", "remote_id", "reprocessed_at"]
        )
        enqueue_delivery(delivery)
    return Result(Outcome.QUEUED)


def run_delivery(delivery_id: int) -> Outcome | None:
    """What a worker does with one queued delivery. Returns the outcome, or None when there was
    nothing to do (already settled by another run, or gone)."""
    delivery = WebhookDelivery.objects.filter(pk=delivery_id, status=Outcome.QUEUED).first()
    if delivery is None:
        return None
    delivery.attempts += 1
    try:
        event = parse_event(delivery.headers, delivery.received_body())
    except InvalidEvent as exc:
        # Valid when it arrived; only a change of the app's rules can make it invalid now.
        delivery.reject(400, exc.detail)
        return Outcome.REJECTED
    return process_event(event, delivery).status
