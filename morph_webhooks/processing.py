"""The one function that applies a Morph event.

The endpoint, the admin's reprocess action and anything else that replays an event call
:func:`process_event`; nothing else writes an :class:`Opportunity`.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

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
from .events import InvalidEvent, MorphEvent, parse_event
from .models import IdempotencyKey, Opportunity, Outcome, WebhookDelivery
from .serializers import OPPORTUNITY_MODEL
from .signals import opportunity_created, opportunity_deleted, opportunity_updated

logger = logging.getLogger(__name__)

SIGNALS = {"created": opportunity_created, "updated": opportunity_updated, "deleted": opportunity_deleted}

# A collision (a concurrent twin took the key, or created the opportunity first) is resolved by
# starting over: the next attempt sees the committed row. More than a few in a row is pathological.
ATTEMPTS = 3


@dataclass(frozen=True)
class Result:
    status: Outcome
    opportunity: Opportunity | None = None
    created: bool = False


class ConcurrentDeliveryError(Exception):
    """Concurrent deliveries kept colliding; a retry will succeed."""


class _Collision(Exception):
    pass


def process_event(event: MorphEvent, delivery: WebhookDelivery | None = None) -> Result:
    """Apply ``event`` exactly once, in ``updatedAt`` order, and record the outcome on ``delivery``.

    Runs in its own transaction: the idempotency key, the opportunity, the delivery record and
    whatever signal receivers write are committed together or not at all. On failure the
    delivery is saved as failed with the traceback, and the exception propagates.
    """
    try:
        return _apply_with_retries(event, delivery)
    except Exception as exc:
        if delivery is not None:
            _record_failure(delivery, exc)
        raise


def _apply_with_retries(event: MorphEvent, delivery: WebhookDelivery | None) -> Result:
    for _ in range(ATTEMPTS):
        result = None
        try:
            with transaction.atomic():
                result = _apply(event, delivery)
        except _Collision:
            continue
        except Exception as exc:
            if result is None or isinstance(exc, DatabaseError):
                raise
            # Committed: only a receiver's transaction.on_commit callback failed afterwards.
            # Answering 500 would make Morph retry an event that is already stored.
            logger.exception(
                "A transaction.on_commit callback failed after %s was stored", event.idempotency_key
            )
        return result
    raise ConcurrentDeliveryError(f"gave up after {ATTEMPTS} collisions with concurrent deliveries")


def http_status_for(exc: BaseException) -> int:
    """503 where a retry can succeed on its own (database down, lock timeout), 500 otherwise."""
    return 503 if isinstance(exc, (OperationalError, InterfaceError, ConcurrentDeliveryError)) else 500


def _apply(event: MorphEvent, delivery: WebhookDelivery | None) -> Result:
    if _count_redelivery(event):
        return _finish(delivery, Result(Outcome.DUPLICATE))
    if event.model != OPPORTUNITY_MODEL:
        _claim(event, Outcome.IGNORED)
        return _finish(delivery, Result(Outcome.IGNORED))

    # The row lock orders concurrent events for one opportunity; the key's unique index orders
    # concurrent deliveries of one event.
    opportunity = (
        Opportunity.objects.select_for_update()
        .filter(connector_id=event.connector_id, owner_id=event.owner_id, remote_id=event.remote_id)
        .first()
    )
    if opportunity is not None and not _supersedes(event, opportunity):
        _claim(event, Outcome.STALE)
        return _finish(delivery, Result(Outcome.STALE, opportunity))

    _claim(event, Outcome.PROCESSED)
    created = opportunity is None
    if opportunity is None:
        opportunity = Opportunity(
            connector_id=event.connector_id, owner_id=event.owner_id, remote_id=event.remote_id
        )
    _copy_event(event, opportunity)
    if created:
        try:
            opportunity.save(force_insert=True)
        except IntegrityError as exc:
            raise _Collision from exc
    else:
        opportunity.save()
    SIGNALS[event.action].send(sender=Opportunity, instance=opportunity, event=event, created=created)
    return _finish(delivery, Result(Outcome.PROCESSED, opportunity, created))


def _count_redelivery(event: MorphEvent) -> bool:
    updated = IdempotencyKey.objects.filter(
        connector_id=event.connector_id, owner_id=event.owner_id, key=event.idempotency_key
    ).update(deliveries=F("deliveries") + 1, last_seen_at=timezone.now())
    return updated > 0


def _claim(event: MorphEvent, outcome: Outcome) -> None:
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
        raise _Collision from exc


def _supersedes(event: MorphEvent, opportunity: Opportunity) -> bool:
    """Whether ``event`` is newer than what is stored.

    The newer ``updatedAt`` wins. At an equal ``updatedAt`` only a delete of a live row applies:
    CRMs do not always bump ``updatedAt`` when deleting, while a create or update with the same
    ``updatedAt`` describes the version already stored (typically a re-sent notification).
    """
    assert event.remote_updated_at is not None
    if event.remote_updated_at != opportunity.remote_updated_at:
        return event.remote_updated_at > opportunity.remote_updated_at
    return event.action == "deleted" and opportunity.deleted_at is None


def _copy_event(event: MorphEvent, opportunity: Opportunity) -> None:
    # Only the fields present in the payload change: a partial update must not erase the rest.
    for name, value in event.changes.items():
        setattr(opportunity, name, value)
    assert event.remote_created_at is not None and event.remote_updated_at is not None
    opportunity.remote_created_at = event.remote_created_at
    opportunity.remote_updated_at = event.remote_updated_at
    if event.action == "deleted":
        opportunity.deleted_at = opportunity.deleted_at or timezone.now()
    else:
        opportunity.deleted_at = None


def _finish(delivery: WebhookDelivery | None, result: Result) -> Result:
    if delivery is not None:
        delivery.status = result.status
        delivery.http_status = 200
        delivery.error = ""
        delivery.processed_at = timezone.now()
        delivery.save()
    return result


def _record_failure(delivery: WebhookDelivery, exc: Exception) -> None:
    delivery.status = Outcome.FAILED
    delivery.http_status = http_status_for(exc)
    delivery.error = "".join(traceback.format_exception(exc))
    delivery.processed_at = None
    connection = connections[router.db_for_write(WebhookDelivery)]
    if not connection.in_atomic_block and connection.connection is not None and not connection.is_usable():
        # The connection died mid-transaction (server restart, failover, killed backend): a new
        # one can still record why, as Django would open at the next request anyway.
        connection.close()
    try:
        delivery.save()
    except DatabaseError:
        # The database is what failed; the original error is what the caller needs to see.
        logger.exception("Could not record failed delivery %s", delivery.idempotency_key)


# Refusals of the request itself (too large: no body was kept; not JSON): nothing to re-read.
REFUSED_REQUESTS = (413, 415)


def reprocess_delivery(delivery: WebhookDelivery) -> Result | None:
    """Run a logged request through validation and :func:`process_event` again.

    Returns ``None`` when the request is still invalid (the delivery stays rejected, with the
    current error). An event already applied comes back as a duplicate, exactly as a re-sent one.
    """
    if delivery.http_status in REFUSED_REQUESTS:
        return None
    delivery.attempts += 1
    try:
        event = parse_event(delivery.headers, delivery.body.encode())
        # The same policy as the endpoint: a replay must not let in what a request could not.
        check_allowed(event)
    except InvalidEvent as exc:
        delivery.reject(400, exc.detail)
        return None
    except PermissionDenied as exc:
        delivery.reject(403, {"error": "permission_denied", "detail": exc.detail})
        return None
    delivery.event, delivery.remote_id = event.type, event.remote_id
    return process_event(event, delivery)
