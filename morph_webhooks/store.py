"""Every write of the event path, within its caller's transaction, and the reads that go with
them: a resource's version and its signals (a webhook's, an expanded reference's, a sync's page)
over its locked row, the idempotency key's claim and settling, and the delivery's record. The
event path's statements are compiled once (:mod:`morph_webhooks.statements`); what to write, and
when, is :mod:`morph_webhooks.apply`'s."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from django.db import DatabaseError, IntegrityError, OperationalError, connections
from django.db.models import QuerySet
from django.db.models.functions import Collate
from django.utils import timezone

from . import statements
from .conf import conf
from .events import MorphEvent, ResourceEvent
from .models import IdempotencyKey, MirroredResource, Outcome, WebhookDelivery
from .resources.links import Link
from .resources.registry import REGISTRY, SPECS_BY_MODEL
from .resources.relations import tenant_ref

R = TypeVar("R", bound=MirroredResource)

# A resource among a connection's: its Morph model and id.
Key = tuple[str, str]

# What storing_outcome reads of a stored row: its version and how it was deleted.
STORED_STATE = ("remote_updated_at", "deleted_at", "deleted_by_sync")

# A collision (a concurrent event created the resource first) is resolved by starting over: the
# next attempt sees the committed row; so is a deadlock. More than a few in a row is pathological.
ATTEMPTS = 3


class Collision(Exception):
    """A concurrent transaction created the same row first."""


class AlreadyApplied(Exception):
    pass


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


def store_resource(event: ResourceEvent, locked: dict[Key, MirroredResource | None] | None = None) -> str:
    """Store the version of a resource that ``event`` describes, within the caller's transaction
    and without an idempotency key: for a resource carried by another event, or read from Morph's
    API. Returns "created" or "updated"; or, changing nothing and sending no signal, "unchanged"
    (the stored version is this one) or "stale" (it is newer). Raises Collision when a concurrent
    transaction created the row first: the caller's transaction is spoilt and must start over.
    ``locked`` holds rows :func:`lock_in_order` locked, the resource's among them; what is
    stored here is kept in it."""
    key = resource_key(event)
    row = locked[key] if locked is not None else locked_row(event)
    outcome = storing_outcome(event, row)
    if outcome == "created" and event.action == "updated":
        # New here (an expanded reference's resource, typically): a receiver of *_created hears
        # of every row created, whatever brought it.
        event = replace(event, action="created")
    if outcome in ("created", "updated"):
        row = write_resource(event, row)
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
        pair_new_rows(rows)
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
    if not supersedes(event, row):
        return "unchanged" if row.remote_updated_at == event.remote_updated_at else "stale"
    return "updated"


def locked_row(event: ResourceEvent) -> MirroredResource | None:
    return statements.locked_row(event.spec.model, event.connector_id, event.owner_id, event.remote_id)


def resource_key(event: ResourceEvent) -> Key:
    return event.model, event.remote_id


def write_resource(event: ResourceEvent, row: MirroredResource | None) -> MirroredResource:
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
    if created:
        pair_new_rows([row])
    else:
        replace_pairs(row, before)
    _announce(event, row, before, created)
    return row


def pair_new_rows(rows: Sequence[MirroredResource]) -> None:
    """Write the pairs that the lists of ``rows``, new rows of one model, name (see
    :mod:`morph_webhooks.resources.links`): one INSERT per list that any of them fills, however
    long (all in one statement on PostgreSQL), none for empty lists. A pair the other side listed
    already is marked listed by this one."""
    if not rows:
        return
    links = SPECS_BY_MODEL[type(rows[0])].links
    statements.add_pairs(
        [(link, [pair for row in rows for pair in _pairs(row, _listed(row, link))]) for link in links]
    )


def replace_pairs(row: MirroredResource, before: Mapping[str, object]) -> None:
    """Rewrite the pairs of the lists of ``row`` that its event changed (``before`` holds their
    values before it): a newer event's list replaces the pairs this side listed, an empty one
    removes them. An unchanged list costs nothing; a changed one a DELETE unless it was empty (plus
    an UPDATE of the other side's pairs, for a table both sides list), and an INSERT unless it is
    empty now."""
    for link in SPECS_BY_MODEL[type(row)].links:
        if link.column not in before:
            continue
        listed, was = _listed(row, link), set(_ids(before[link.column]))
        if listed == was:
            continue
        pairs = _pairs(row, listed)
        if was:  # an empty list had no pairs to drop
            statements.drop_pairs(link, str(row.ref), [target for _, target in pairs])
        statements.add_pairs([(link, pairs)])


def _pairs(row: MirroredResource, listed: set[str]) -> list[tuple[str, str]]:
    """(the row's ref, a listed row's ref) for each Morph id ``listed``."""
    return [
        (str(row.ref), tenant_ref(row.connector_id, row.owner_id, remote_id)) for remote_id in sorted(listed)
    ]


def _listed(row: MirroredResource, link: Link) -> set[str]:
    return set(_ids(getattr(row, link.column)))


def _ids(value: object) -> list[str]:
    # A list of Morph ids as stored; a null list (Morph's null) lists nothing.
    return [item for item in value if isinstance(item, str) and item] if isinstance(value, list) else []


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


def supersedes(event: ResourceEvent, row: MirroredResource) -> bool:
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
    # A sync's delete is one that its scan did not list the resource (see supersedes).
    row.deleted_by_sync = event.action == "deleted" and event.source == "sync"


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


def correct_key_outcome(event: MorphEvent, outcome: Outcome) -> None:
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
        raise AlreadyApplied


def claims_with_insert() -> bool:
    """Whether :func:`claim_and_record` claims the key and inserts the delivery in one statement
    (PostgreSQL); otherwise the delivery is written once the claim is known."""
    return statements.claims_with_insert(IdempotencyKey, WebhookDelivery)


def claim_and_record(event: MorphEvent, delivery: WebhookDelivery) -> bool:
    """:func:`first_delivery` of ``event`` as queued, and ``delivery``'s insert, in one round trip
    (see morph_webhooks.statements); False when the key was claimed before."""
    return statements.claim_key_and_insert(
        IdempotencyKey, delivery, key_claim(event, Outcome.QUEUED), conf.LOCK_TIMEOUT
    )


def delivery_by_pk(delivery_id: int) -> WebhookDelivery | None:
    # Read with a statement compiled once (see morph_webhooks.statements): one per delivery a task runs.
    delivery = statements.by_pk(WebhookDelivery, delivery_id)
    assert delivery is None or isinstance(delivery, WebhookDelivery)
    return delivery


def save_delivery(delivery: WebhookDelivery) -> None:
    """Write the delivery's transition (see the WebhookDelivery's methods)."""
    # Every request's delivery is written by its transitions: with statements compiled once, not
    # by the ORM on every request (see morph_webhooks.statements). One deleted meanwhile (pruned)
    # is inserted again, as save() would.
    if delivery._state.adding and delivery.pk is None:
        statements.insert(delivery)
    elif not statements.update(delivery):
        delivery.save()


def save_attempt_end(delivery: WebhookDelivery) -> bool:
    """Write how a worker's attempt at a queued delivery ended (a retry scheduled, or given up),
    only while it is still queued: a concurrent run of the same delivery may have succeeded
    meanwhile. False when it was not: nothing was written."""
    updated = WebhookDelivery.objects.filter(pk=delivery.pk, status=Outcome.QUEUED).update(
        status=delivery.status,
        error=delivery.error,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
    )
    return updated > 0


def save_reprocessed(delivery: WebhookDelivery) -> None:
    """Write when a settled delivery was last reprocessed: nothing else of it changes."""
    delivery.save(update_fields=["reprocessed_at"])
