"""The one function that applies a Morph event.

The endpoint, replays of logged deliveries and deferred-mode workers call :func:`process_event`;
nothing else writes a mirrored resource (an :class:`Opportunity`...). This module knows nothing of
how it is called: what a failure leads to beyond being recorded (a retry, in deferred mode) is its
caller's to decide.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from django.db import DatabaseError, IntegrityError, OperationalError, connections, router, transaction
from django.db.models import QuerySet
from django.db.models.functions import Collate
from django.utils import timezone

from . import statements
from .conf import conf
from .errors import ConcurrentDeliveryError, http_status_for
from .events import MorphEvent, ResourceEvent
from .metrics import observe_processing
from .models import AWAITING_APPLY, IdempotencyKey, MirroredResource, Outcome, WebhookDelivery
from .resources.registry import REGISTRY
from .signals import delivery_failed, event_received

R = TypeVar("R", bound=MirroredResource)
# A resource among a connection's: its Morph model and id.
Key = tuple[str, str]

logger = logging.getLogger(__name__)

# What storing_outcome reads of a stored row: its version and how it was deleted.
STORED_STATE = ("remote_updated_at", "deleted_at", "deleted_by_sync")

# A collision (a concurrent event created the resource first) is resolved by starting over: the
# next attempt sees the committed row; so is a deadlock. More than a few in a row is pathological.
ATTEMPTS = 3


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    # A reprocess of a delivery that was already settled: nothing was run again.
    already_applied: bool = False
    # Why a reprocess rejected the delivery: the error it recorded.
    reason: str = ""


# What becomes of a delivery whose processing failed, once its transaction has rolled back.
FailureRecorder = Callable[[WebhookDelivery, Exception], None]


class Collision(Exception):
    """A concurrent transaction created the same row first."""


class _AlreadyApplied(Exception):
    pass


def record_failure(delivery: WebhookDelivery, exc: Exception) -> None:
    """A request's delivery fails with the status Morph is answered (Morph retries it). One whose
    key is held for it (a queued delivery replayed outside deferred mode) dies: nothing here would
    run a retry."""
    if delivery.status in AWAITING_APPLY:
        give_up(delivery, exc)
    else:
        delivery.fail(exc, http_status_for(exc))


def give_up(delivery: WebhookDelivery, exc: Exception) -> None:
    if delivery.die(exc):
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
            committed = _Committed()
            try:
                with transaction.atomic():
                    # The first callback to run after the commit, before any receiver's: once it
                    # has run, the event is stored whatever fails next.
                    transaction.on_commit(committed.mark)
                    result = body(event, delivery)
            except Collision:
                continue
            except _AlreadyApplied:
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


def deadlocked(exc: BaseException) -> bool:
    """Whether PostgreSQL ended a deadlock by failing this transaction: started over, it goes
    through. Rows are locked in one order (:func:`lock_in_order`), but new rows are inserted in
    the events' order, and two transactions may insert the same two in opposite orders."""
    cause = exc.__cause__
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return isinstance(exc, OperationalError) and code == "40P01"


def bound_lock_wait() -> None:
    """Give up waiting for a lock after LOCK_TIMEOUT seconds, for the rest of this transaction.

    A lock held elsewhere (a long transaction, a migration) would otherwise keep the request
    waiting until the web server kills the worker, and Morph would get an HTML 500 with nothing
    logged; a lock timeout is an OperationalError, answered 503 so that Morph retries. SQLite has
    no such setting: there the connection's busy timeout (its ``timeout`` option) bounds the wait.
    """
    statements.bound_lock_wait(IdempotencyKey, conf.LOCK_TIMEOUT)


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
        locked = lock_in_order(event.connector_id, event.owner_id, map(_key, (event, *event.related)))
        # Stored first, under their own updatedAt and with their own signals, so that the event's
        # receivers find them (a deal's new stage).
        for related in event.related:
            store_resource(related, locked)
        row = locked[_key(event)]
    else:
        row = _locked_row(event)
    if row is not None and not _supersedes(event, row):
        if queued:
            claim_queued_key(event, Outcome.STALE)
        else:
            _correct_key_outcome(event, Outcome.STALE)
        return settle(event, delivery, Outcome.STALE)
    if queued:
        claim_queued_key(event, Outcome.PROCESSED)
    _write(event, row)
    return settle(event, delivery, Outcome.PROCESSED)


def store_resource(event: ResourceEvent, locked: dict[Key, MirroredResource | None] | None = None) -> str:
    """Store the version of a resource that ``event`` describes, within the caller's transaction
    and without an idempotency key: for a resource carried by another event, or read from Morph's
    API. Returns "created" or "updated"; or, changing nothing and sending no signal, "unchanged"
    (the stored version is this one) or "stale" (it is newer). Raises Collision when a concurrent
    transaction created the row first: the caller's transaction is spoilt and must start over.
    ``locked`` holds rows :func:`lock_in_order` locked, the resource's among them; what is
    stored here is kept in it."""
    key = _key(event)
    row = locked[key] if locked is not None else _locked_row(event)
    outcome = storing_outcome(event, row)
    if outcome == "created" and event.action == "updated":
        # New here (an expanded reference's resource, typically): a receiver of *_created hears
        # of every row created, whatever brought it.
        event = replace(event, action="created")
    if outcome in ("created", "updated"):
        row = _write(event, row)
        if locked is not None:
            locked[key] = row
    return outcome


def lock_in_order(
    connector_id: str, owner_id: str, keys: Iterable[Key]
) -> dict[Key, MirroredResource | None]:
    """Lock the stored resources of ``keys`` (a connection's (Morph model, id) pairs), None where
    none is stored yet, one by one in the order of the keys: by model, then id. Every transaction
    that locks several resources (an event and its expanded references, a sync's page and its
    resources' ones) takes them in this order, so that none waits for a row while holding one
    the other waits for (a deadlock, ended by PostgreSQL failing one of them)."""
    return {
        key: statements.locked_row(REGISTRY[key[0]].model, connector_id, owner_id, key[1])
        for key in sorted(set(keys))
    }


def in_lock_order(rows: QuerySet[R]) -> QuerySet[R]:
    """``rows``, of one model, in the order :func:`lock_in_order` locks them: by id, as Python
    compares strings (code point by code point, PostgreSQL's "C" collation), whatever the
    column's collation; a ``select_for_update()`` locks them in that order."""
    if connections[rows.db].vendor == "postgresql":
        return rows.order_by(Collate("remote_id", "C"))
    return rows.order_by("remote_id")


def store_page(
    events: Sequence[ResourceEvent],
    stored: Mapping[str, MirroredResource],
    synced_at: datetime | None = None,
) -> Counter[str]:
    """Store ``events``, a page read from Morph's API, in its order and by the rules of
    :func:`store_resource`, within the caller's transaction. ``stored`` holds the page's rows by
    ``remote_id`` (:data:`STORED_STATE` suffices), locked by the caller in one query: what the
    page holds new is known without a query per resource, and stays new while the lock holds,
    unless a concurrent event creates it (a Collision, as for store_resource).

    Consecutive new resources are inserted together, one statement for a run of them, and each
    then sends its signal (``created``) as store_resource would, in the page's order. Anything else
    takes store_resource's own path once the new resources before it are stored: a newer version
    of a stored row, an id the page listed or expanded before, a resource's expanded references.
    New rows are written with ``synced_at`` (when the sync read them), sparing the page an UPDATE
    of its new rows. Returns how many events came to each outcome."""
    counts: Counter[str] = Counter()
    new: dict[str, ResourceEvent] = {}
    written: set[str] = set()
    # What storing them came to, for the page's resources stored first as another's expansion.
    expanded: dict[str, str] = {}

    def insert_new() -> None:
        rows = [_changed_row(event, None)[0] for event in new.values()]
        for row in rows:
            row.synced_at = synced_at
        try:
            statements.insert_many(rows)
        except IntegrityError as exc:
            # A concurrent event created one of the rows first: start over, and this time see it.
            raise Collision from exc
        for event, row in zip(new.values(), rows, strict=True):
            _announce(event, row, {}, True)
        written.update(new)
        new.clear()

    for event in events:
        if event.related or event.remote_id in new:
            insert_new()
        for related in event.related:
            related_outcome = store_resource(related)
            if related.spec is event.spec:
                # Perhaps listed later in the page (a company expanding its parent): that copy is
                # compared with this one then, as with any version this page stored.
                written.add(related.remote_id)
                if related_outcome in ("created", "updated"):
                    expanded.setdefault(related.remote_id, related_outcome)
        row = stored.get(event.remote_id)
        outcome = storing_outcome(event, row)
        if event.remote_id in written:
            # Stored by this page already: compared with that version, as a webhook's would be.
            outcome = store_resource(replace(event, action="updated"))
            if outcome == "unchanged":
                # The version an expansion stored: counted as what storing it came to.
                outcome = expanded.pop(event.remote_id, outcome)
        elif outcome == "created":
            new[event.remote_id] = replace(event, action="created")
        elif outcome == "updated":
            insert_new()
            outcome = store_resource(replace(event, action="updated"))
            written.add(event.remote_id)
        counts[outcome] += 1
    insert_new()
    return counts


def preview_resource(event: ResourceEvent) -> str:
    """What :func:`store_resource` would return for ``event`` now, storing nothing and locking
    nothing: for a dry run."""
    row = (
        event.spec.model._default_manager.filter(
            connector_id=event.connector_id, owner_id=event.owner_id, remote_id=event.remote_id
        )
        .only(*STORED_STATE)
        .first()
    )
    return storing_outcome(event, row)


def storing_outcome(event: ResourceEvent, row: MirroredResource | None) -> str:
    """What storing ``event`` over ``row`` (None: no such resource here) comes to, by the rules of
    :func:`store_resource`; ``row`` needs only its :data:`STORED_STATE`."""
    if row is None:
        return "created"
    if not _supersedes(event, row):
        return "unchanged" if row.remote_updated_at == event.remote_updated_at else "stale"
    return "updated"


def _locked_row(event: ResourceEvent) -> MirroredResource | None:
    return statements.locked_row(event.spec.model, event.connector_id, event.owner_id, event.remote_id)


def _key(event: ResourceEvent) -> Key:
    return event.model, event.remote_id


def _write(event: ResourceEvent, row: MirroredResource | None) -> MirroredResource:
    """Store the version ``event`` describes over ``row`` (None: a resource new here) and send
    the event's signal, then whatever the model's spec adds (``after_apply``). Returns the row."""
    created = row is None
    row, before = _changed_row(event, row)
    if created:
        try:
            statements.insert(row)
        except IntegrityError as exc:
            # A concurrent event created the row first: start over, and this time see it.
            raise Collision from exc
    elif not statements.update(row):
        raise DatabaseError(f"{row} was deleted while locked")  # the lock forbids it
    _announce(event, row, before, created)
    return row


def _changed_row(
    event: ResourceEvent, row: MirroredResource | None
) -> tuple[MirroredResource, dict[str, object]]:
    """``row`` (a new one when None) holding the version ``event`` describes, not saved yet, and
    what its changed fields held before."""
    if row is None:
        row = event.spec.model(
            connector_id=event.connector_id, owner_id=event.owner_id, remote_id=event.remote_id
        )
        before: dict[str, object] = {}
    else:
        before = {name: getattr(row, name) for name in event.changes}
    _copy_event(event, row)
    return row, before


def _announce(event: ResourceEvent, row: MirroredResource, before: dict[str, object], created: bool) -> None:
    """Send the signal of ``event``, stored in ``row``, then whatever the model's spec adds."""
    event.spec.signals[event.action].send(sender=event.spec.model, instance=row, event=event, created=created)
    if event.spec.after_apply is not None:
        event.spec.after_apply(event, row, before)


def first_delivery(event: MorphEvent, outcome: Outcome) -> bool:
    """Claim the event's key with ``outcome``, or count one more delivery of it: False when it was
    claimed before (the event is a duplicate). The transaction's first statement: it bounds the
    transaction's lock waits (LOCK_TIMEOUT) from its own on, in the same round trip.

    A concurrent twin's claim makes it wait on the key's unique index until the twin's transaction
    ends: once committed, this is its duplicate; rolled back, this claims the key."""
    return statements.claim_or_count_key(IdempotencyKey, key_claim(event, outcome), conf.LOCK_TIMEOUT)


def key_claim(event: MorphEvent, outcome: Outcome) -> statements.KeyClaim:
    """What claiming ``event``'s key for ``outcome`` writes."""
    return statements.KeyClaim(
        connector_id=event.connector_id,
        owner_id=event.owner_id,
        key=event.idempotency_key,
        event=event.type,
        remote_id=event.remote_id,
        outcome=outcome,
    )


def _correct_key_outcome(event: MorphEvent, outcome: Outcome) -> None:
    """Record on the key, claimed by :func:`first_delivery` in this transaction, what became of
    its event after all."""
    statements.settle_key(IdempotencyKey, key_claim(event, outcome))


def claim_queued_key(event: MorphEvent, outcome: Outcome) -> None:
    """Settle the key that a queued delivery claimed on arrival (outcome "queued") with ``outcome``."""
    # The row lock taken by this update is what keeps two runs of one queued delivery apart: the
    # second waits, then finds the key settled and changes nothing.
    if statements.settle_key(IdempotencyKey, key_claim(event, outcome), was=Outcome.QUEUED):
        return
    # No key held for it: claim it now. Found claimed, another run of this
    # delivery settled it first: this run is that run's duplicate (its count rolls back with it).
    if not first_delivery(event, outcome):
        raise _AlreadyApplied


def _supersedes(event: ResourceEvent, row: MirroredResource) -> bool:
    """Whether ``event`` is newer than what is stored.

    The newer ``updatedAt`` wins. At an equal ``updatedAt`` only a delete of a live row applies:
    CRMs do not always bump ``updatedAt`` when deleting, while a create or update with the same
    ``updatedAt`` describes the version already stored (typically a re-sent notification). A row
    a sync deleted because its scan did not list it was deleted at its own version, on no word
    from Morph: Morph's list showing it again restores it, Morph's deleted event confirms it.
    """
    if event.remote_updated_at != row.remote_updated_at:
        return event.remote_updated_at > row.remote_updated_at
    if row.deleted_by_sync:
        return (event.action == "deleted") != (event.source == "sync")
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
    # A sync's delete is one that its scan did not list the resource (see _supersedes).
    row.deleted_by_sync = event.action == "deleted" and event.source == "sync"


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
