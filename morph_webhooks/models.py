from __future__ import annotations

import hashlib
import json
import shlex
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeGuard

from django.db import IntegrityError, models, router, transaction
from django.db.models import OuterRef, Q, Subquery
from django.db.models.signals import post_delete
from django.utils.timezone import now
from django.utils.translation import gettext_lazy as _

from .conf import conf
from .redaction import redact
from .text import is_storable, storable

if TYPE_CHECKING:
    from .events import MorphEvent

# The mirrored resources live in morph_webhooks.resources, one module each; the app's models
# are importable from here, their stable public path.
from .resources.base import ID_LENGTH as ID_LENGTH
from .resources.base import MirroredResource as MirroredResource
from .resources.base import ResourceQuerySet as ResourceQuerySet
from .resources.company import Company as Company
from .resources.contact import Contact as Contact
from .resources.engagement import Engagement as Engagement
from .resources.engagement import EngagementDirection as EngagementDirection
from .resources.engagement import EngagementStatus as EngagementStatus
from .resources.engagement import EngagementType as EngagementType
from .resources.links import EngagementCompany as EngagementCompany
from .resources.links import EngagementContact as EngagementContact
from .resources.links import EngagementOpportunity as EngagementOpportunity
from .resources.links import EngagementUser as EngagementUser
from .resources.links import OpportunityCompany as OpportunityCompany
from .resources.links import OpportunityContact as OpportunityContact
from .resources.opportunity import Opportunity as Opportunity
from .resources.opportunity import OpportunityQuerySet as OpportunityQuerySet
from .resources.pipeline import Pipeline as Pipeline
from .resources.stage import Stage as Stage
from .resources.stage import StageType as StageType
from .resources.user import CrmUser as CrmUser
from .resources.workspace import Workspace as Workspace


class Outcome(models.TextChoices):
    """What became of one delivery: what ``WebhookDelivery.status`` holds. An idempotency key's
    ``outcome`` holds one of KEY_OUTCOMES: what became of its event."""

    QUEUED = "queued", _("queued")
    PROCESSED = "processed", _("processed")
    STALE = "stale", _("stale")
    IGNORED = "ignored", _("ignored")
    DUPLICATE = "duplicate", _("duplicate")
    REJECTED = "rejected", _("rejected")
    FAILED = "failed", _("failed")
    DEAD = "dead", _("dead")


KEY_OUTCOMES = (Outcome.QUEUED, Outcome.PROCESSED, Outcome.STALE, Outcome.IGNORED)
# Deliveries accepted in deferred mode whose event is yet to be applied, whether a worker will
# still try (queued) or gave up (dead): their key was claimed on arrival (outcome "queued") and is
# held for them, so no other delivery of the event applies it; applying it is theirs to do.
AWAITING_APPLY = (Outcome.QUEUED, Outcome.DEAD)
# Deliveries whose processing failed: in the request, or in a worker that gave up. The health
# check's failure rate and the admin overview count these.
FAILED_OUTCOMES = (Outcome.FAILED, Outcome.DEAD)


class IdempotencyKey(models.Model):
    """One ``x-idempotency-key`` that was handled, scoped to its connector and owner.

    The row is written in the same transaction that applies the event, so it exists exactly when
    the event's effects do; the unique constraint is what makes a concurrent twin a duplicate.
    """

    connector_id = models.CharField(_("connector"), max_length=ID_LENGTH)
    owner_id = models.CharField(_("owner (tenant)"), max_length=ID_LENGTH)
    key = models.CharField(max_length=ID_LENGTH)
    event = models.CharField(max_length=ID_LENGTH)
    remote_id = models.CharField(max_length=ID_LENGTH)
    outcome = models.CharField(
        max_length=16,
        choices=[(outcome.value, outcome.label) for outcome in KEY_OUTCOMES],
    )
    deliveries = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Named as the request log is, so that the admin's index lists the two together, after the
        # resources mirrored from Morph.
        verbose_name = _("webhook idempotency key")
        verbose_name_plural = _("webhook idempotency keys")
        constraints = [
            # Keys are only unique per connector and owner.
            models.UniqueConstraint(
                fields=["key", "connector_id", "owner_id"], name="morph_webhooks_idempotencykey_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["first_seen_at"], name="morph_key_first_seen_idx"),
            models.Index(fields=["outcome"], name="morph_key_outcome_idx"),
        ]

    def __str__(self) -> str:
        return self.key


def _storable_text(value: object) -> TypeGuard[str]:
    # A refused body may hold what no column can (an escaped NUL or lone surrogate): keep none of it.
    return isinstance(value, str) and is_storable(value)


class WebhookDelivery(models.Model):
    """One authenticated request to the endpoint, as it arrived, and what became of it."""

    received_at = models.DateTimeField(auto_now_add=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    path = models.TextField(help_text=_("The request path and query, with secrets removed."))
    headers = models.JSONField(default=dict, help_text=_("Request headers, with secrets removed."))
    body = models.TextField(blank=True)
    raw_body = models.BinaryField(
        null=True,
        blank=True,
        help_text=_(
            "The body's bytes as received, kept only when the body text could not hold them "
            "(not UTF-8, NUL characters): reprocessing reads these."
        ),
    )

    connector_id = models.CharField(_("connector"), max_length=ID_LENGTH, blank=True)
    owner_id = models.CharField(_("owner (tenant)"), max_length=ID_LENGTH, blank=True)
    idempotency_key = models.CharField(max_length=ID_LENGTH, blank=True)
    event = models.CharField(max_length=ID_LENGTH, blank=True)
    remote_id = models.CharField(max_length=ID_LENGTH, blank=True)

    status = models.CharField(max_length=16, choices=Outcome.choices)
    http_status = models.PositiveSmallIntegerField()
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text=_("Deferred mode: when a worker is due to (re)try it.")
    )
    processed_at = models.DateTimeField(null=True, blank=True)
    reprocessed_at = models.DateTimeField(
        null=True, blank=True, help_text=_("When it was last reprocessed from the admin or the command.")
    )

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        permissions = [("reprocess_webhookdelivery", _("Can reprocess webhook deliveries"))]
        indexes = [
            models.Index(fields=["received_at"], name="morph_delivery_received_idx"),
            models.Index(fields=["status", "received_at"], name="morph_delivery_status_idx"),
            models.Index(fields=["idempotency_key"], name="morph_delivery_key_idx"),
            # The sweeper's question: which queued deliveries are overdue?
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="queued"),
                name="morph_delivery_pending_idx",
            ),
            models.Index(fields=["remote_id"], name="morph_delivery_remote_idx"),
            # The health check's question: when did each connection last send an event?
            models.Index(fields=["connector_id", "owner_id", "received_at"], name="morph_delivery_conn_idx"),
            # The admin's filter by HTTP status. Answers other than 200 only: they are the few the
            # filter is for, and a delivery answered 200 (nearly all) costs the index nothing.
            models.Index(
                fields=["http_status", "received_at"],
                condition=~Q(http_status=200),
                name="morph_delivery_http_status_idx",
            ),
        ]

    # The event its body was found to hold, once the policy let it in; in memory only (the endpoint's
    # metrics label the request with its model and connector).
    accepted_event: MorphEvent | None = None

    def __str__(self) -> str:
        return f"{self.event or 'request'} {self.idempotency_key}".strip()

    @classmethod
    def received(
        cls, remote_addr: str | None, path: str, headers: dict[str, str], connector_id: str
    ) -> WebhookDelivery:
        """A request as it arrived, not saved yet: what becomes of it is one of the transitions below."""
        return cls(
            remote_addr=remote_addr,
            path=path,
            headers=headers,
            # Header values of rejected requests may be anything; keep them within the columns.
            connector_id=connector_id[:ID_LENGTH],
            owner_id=headers.get("x-owner-id", "")[:ID_LENGTH],
            idempotency_key=headers.get("x-idempotency-key", "")[:ID_LENGTH],
        )

    def record_body(self, body: bytes, text: str) -> None:
        """Keep the body as ``text`` (what every database can store and the admin shows), and its
        bytes as well when the text is not them: a reprocess must read what was received."""
        self.body = text
        self.raw_body = None if text.encode() == body else body

    def received_body(self) -> bytes:
        return self.body.encode() if self.raw_body is None else bytes(self.raw_body)

    def identify(self, event: MorphEvent) -> None:
        """Name the event the body turned out to hold (saved with the transition that follows)."""
        self.event, self.remote_id = event.type, event.remote_id
        self.accepted_event = event

    def name_from_body(self) -> None:
        """A body refused as an event may still say which event it was: keep its ``event`` and
        ``data.id`` when they are strings, so that the log finds it by its Morph id."""
        if self.event and self.remote_id:
            return
        try:
            payload = json.loads(self.body)
        except (ValueError, RecursionError):
            return
        if not isinstance(payload, dict):
            return
        event, data = payload.get("event"), payload.get("data")
        remote_id = data.get("id") if isinstance(data, dict) else None
        if not self.event and _storable_text(event):
            self.event = event[:ID_LENGTH]
        if not self.remote_id and _storable_text(remote_id):
            self.remote_id = remote_id[:ID_LENGTH]

    def begin_attempt(self) -> None:
        self.attempts += 1

    def mark_reprocessed(self) -> None:
        """Note the reprocess (saved with the transition that follows, or alone when none does: a
        settled delivery keeps its outcome)."""
        self.reprocessed_at = now()

    # The transitions below change the delivery in memory; morph_webhooks.store writes them.

    def reject(self, http_status: int, detail: Any) -> None:
        """The request can never be valid; no idempotency key is consumed."""
        self.name_from_body()
        self.status = Outcome.REJECTED
        self.http_status = http_status
        self.error = json.dumps(detail)
        self.processed_at = None

    def finish(self, outcome: Outcome, note: str = "") -> None:
        """Its event was settled (applied, stale, ignored or a duplicate); ``note`` is what the log
        shows of it (warnings), in the error column."""
        self.status = outcome
        self.http_status = 200
        self.error = note
        self.next_attempt_at = None
        self.processed_at = now()

    def fail(self, exc: BaseException, http_status: int) -> None:
        """Processing failed and Morph was answered ``http_status`` (it retries)."""
        self.status = Outcome.FAILED
        self.http_status = http_status
        self.error = format_traceback(exc)
        self.processed_at = None

    def queue(self) -> None:
        """Deferred mode: accepted, for a worker to apply; its first attempt is due now."""
        self.status = Outcome.QUEUED
        self.http_status = 200
        self.attempts = 0
        self.next_attempt_at = now()

    def schedule_retry(self, exc: BaseException, due_at: datetime) -> None:
        """Deferred mode: a worker's attempt failed; the next is due at ``due_at`` (written only
        while the delivery is still queued: see store.save_attempt_end)."""
        self._end_attempt(exc, Outcome.QUEUED, due_at)

    def die(self, exc: BaseException) -> None:
        """Give up: nothing retries it until someone reprocesses it; its key stays held for it
        (written only while the delivery is still queued: see store.save_attempt_end)."""
        self._end_attempt(exc, Outcome.DEAD, None)

    def _end_attempt(self, exc: BaseException, status: Outcome, due_at: datetime | None) -> None:
        self.error = format_traceback(exc)
        self.status = status
        self.next_attempt_at = due_at


def format_traceback(exc: BaseException) -> str:
    """The traceback a delivery keeps and the admin shows, the credentials masked: a receiver's
    exception may quote a URL with its token, or a secret it was given."""
    # Stored as every database can: an exception may quote bytes a service sent (a NUL).
    return storable(redact("".join(traceback.format_exception(exc))))


class SignedMessage(models.Model):
    """A Standard Webhooks message that was accepted: its ``webhook-id`` signed at its
    ``webhook-timestamp``, which no request may present again.

    The signature covers the id, the timestamp and the body, not Morph's headers, so a captured
    signed request could otherwise be replayed, within ``SIGNATURE_TOLERANCE``, with another
    ``x-owner-id`` (into another tenant) or another idempotency key. The id alone is not what is
    single-use: a gateway retries a failed delivery with the same id, signed again at a new
    timestamp, and that retry must get through; the pair is what one signature vouches for.
    (Keying on the signature header instead would let a replay pass by reordering or dropping
    one of several signatures.) Once the timestamp is outside the tolerance window the
    signature fails anyway, so ``morph_webhooks_prune`` deletes the row.
    """

    digest = models.CharField(
        max_length=64, unique=True, help_text=_("SHA-256 of webhook-id.webhook-timestamp.")
    )
    signed_at = models.DateTimeField()

    class Meta:
        verbose_name = _("signed message")
        verbose_name_plural = _("signed messages")
        indexes = [models.Index(fields=["signed_at"], name="morph_signed_at_idx")]

    def __str__(self) -> str:
        return self.digest

    @classmethod
    def consume(cls, message_id: str, timestamp: str) -> bool:
        """Record the message; False when it was recorded before. One INSERT, committed at once
        (a request that then fails keeps it used: its retry comes with a new timestamp); of two
        concurrent twins, the second waits on the unique index and then fails."""
        digest = hashlib.sha256(f"{message_id}.{timestamp}".encode()).hexdigest()
        signed_at = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
        try:
            with transaction.atomic():
                cls.objects.create(digest=digest, signed_at=signed_at)
        except IntegrityError:
            return False
        return True


# The connections this process has seen registered: an event for one of them costs no statement.
_REGISTERED: set[tuple[str, str]] = set()


class SyncLeaseLost(Exception):
    """A sync's lease on its connection expired and another sync took it."""


class SyncOutcome(models.TextChoices):
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")


class Connection(models.Model):
    """One Morph connection (a connector for one owner, the tenant), and the state of its sync
    from Morph's REST API.

    ``cursors`` holds, per Morph model whose scan a sync left unfinished, the cursor of the next
    page and when that scan started: the next sync resumes it from there.
    """

    connector_id = models.CharField(_("connector"), max_length=ID_LENGTH)
    owner_id = models.CharField(_("owner (tenant)"), max_length=ID_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)

    last_sync_started_at = models.DateTimeField(null=True, blank=True)
    last_sync_finished_at = models.DateTimeField(null=True, blank=True)
    last_sync_outcome = models.CharField(max_length=16, choices=SyncOutcome.choices, blank=True)
    last_sync_error = models.TextField(blank=True)
    last_sync_counts = models.JSONField(default=dict, blank=True)
    cursors = models.JSONField(default=dict, blank=True, editable=False)
    # The running sync's lease (see claim_sync): which sync holds the connection, and until when.
    sync_lease = models.UUIDField(null=True, blank=True, editable=False)
    sync_lease_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("connection")
        verbose_name_plural = _("connections")
        permissions = [("sync_connection", _("Can sync connections from Morph's API"))]
        constraints = [
            models.UniqueConstraint(
                fields=["connector_id", "owner_id"], name="morph_webhooks_connection_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.connector_id} / {self.owner_id}"

    @classmethod
    def register(cls, connector_id: str, owner_id: str) -> None:
        """Record the connection of an accepted event: one statement the first time this process
        sees it, none after. The row is inserted, never updated: events must not queue up on one
        shared row."""
        if (connector_id, owner_id) in _REGISTERED:
            return
        with transaction.atomic(using=router.db_for_write(cls)):
            Connection.objects.bulk_create(
                [Connection(connector_id=connector_id, owner_id=owner_id)], ignore_conflicts=True
            )
        _REGISTERED.add((connector_id, owner_id))

    @staticmethod
    def last_event() -> Subquery:
        """For a query of connections, ``annotate(last_event_at=Connection.last_event())``: when
        each last received a delivery (None: never), in the same statement; the (connector_id,
        owner_id, received_at) index answers each connection's subquery whatever the size of the
        request log. The health check, the metrics and the admin read it."""
        newest = WebhookDelivery.objects.filter(
            connector_id=OuterRef("connector_id"), owner_id=OuterRef("owner_id")
        ).order_by("-received_at")
        return Subquery(newest.values("received_at")[:1])

    def sync_command(self) -> str:
        """The shell command that syncs the connection, its ids quoted: it is pasted into a shell,
        and an id is whatever Morph's headers or the admin said."""
        return (
            f"python manage.py morph_webhooks_sync --connector {shlex.quote(self.connector_id)} "
            f"--owner {shlex.quote(self.owner_id)}"
        )

    def sync_running(self) -> bool:
        """Whether a sync holds the connection now (its lease has not expired)."""
        return self.sync_lease_until is not None and self.sync_lease_until > now()

    def claim_sync(self) -> bool:
        """Take the connection's sync lease, unless another sync holds one that has not expired;
        False then, with the other sync's start and lease read. One conditional UPDATE, so that
        two syncs claiming at once cannot both win, on any database. The lease expires
        SYNC_LEASE_SECONDS after its last renewal (each page applied renews it): a sync that
        crashed does not block the connection for longer."""
        lease, started = uuid.uuid4(), now()
        claimed = Connection.objects.filter(
            Q(sync_lease_until__isnull=True) | Q(sync_lease_until__lt=started), pk=self.pk
        ).update(
            sync_lease=lease,
            sync_lease_until=started + timedelta(seconds=conf.SYNC_LEASE_SECONDS),
            last_sync_started_at=started,
            last_sync_finished_at=None,
        )
        if claimed:
            self.sync_lease, self.last_sync_started_at, self.last_sync_finished_at = lease, started, None
        else:
            # Since when the other sync has been running, and until when it holds the connection.
            self.refresh_from_db(fields=["last_sync_started_at", "sync_lease_until"])
        return bool(claimed)

    def finish_sync(self, outcome: SyncOutcome, counts: dict[str, dict[str, int]], error: str = "") -> None:
        """Record the sync's outcome and give its lease back; a sync whose lease expired and was
        taken by another records nothing: the other one's run is the connection's last."""
        # The error may quote Morph's answer, which may hold what no column can (a NUL): were it
        # refused, the lease would stay held and the next sync wait SYNC_LEASE_SECONDS.
        error = storable(error)
        self.last_sync_finished_at = now()
        self.last_sync_outcome = outcome
        self.last_sync_counts = counts
        self.last_sync_error = error
        self._held().update(
            last_sync_finished_at=self.last_sync_finished_at,
            last_sync_outcome=outcome,
            last_sync_counts=counts,
            last_sync_error=error,
            sync_lease=None,
            sync_lease_until=None,
        )
        self.sync_lease = self.sync_lease_until = None

    def save_cursor(self, model: str, cursor: str | None, scan_started_at: datetime) -> None:
        """Where the scan of ``model`` resumes (None: it is complete; the next one starts over),
        and the sync's lease renewed with it. Raises SyncLeaseLost if another sync took the lease
        (this one's expired): the caller's transaction must not commit."""
        if cursor is None:
            self.cursors.pop(model, None)
        else:
            self.cursors[model] = {"cursor": cursor, "scan_started_at": scan_started_at.isoformat()}
        self.renew_sync_lease(cursors=self.cursors)

    def renew_sync_lease(self, **fields: Any) -> None:
        """Renew the lease this sync holds (when it holds one), writing ``fields`` with it."""
        if self.sync_lease is not None:
            fields["sync_lease_until"] = now() + timedelta(seconds=conf.SYNC_LEASE_SECONDS)
        if fields and not self._held().update(**fields):
            raise SyncLeaseLost(
                f"The sync of {self} stopped: it applied nothing for more than "
                f"{conf.SYNC_LEASE_SECONDS:g} seconds (SYNC_LEASE_SECONDS), so another sync took "
                "the connection over."
            )

    def _held(self) -> models.QuerySet[Connection]:
        # sync_lease=None matches NULL: a connection no sync holds, written outside a sync.
        return Connection.objects.filter(pk=self.pk, sync_lease=self.sync_lease)

    def resume_point(self, model: str) -> tuple[str, datetime] | None:
        """The cursor and start of an unfinished scan of ``model``, if a sync left one."""
        state = self.cursors.get(model)
        if not isinstance(state, dict) or not isinstance(state.get("cursor"), str):
            return None
        return state["cursor"], datetime.fromisoformat(state["scan_started_at"])


def _forget_connection(sender: type[Connection], instance: Connection, **kwargs: Any) -> None:
    # Deleted in this process (the admin): its next event registers it again.
    _REGISTERED.discard((instance.connector_id, instance.owner_id))


post_delete.connect(_forget_connection, sender=Connection, dispatch_uid="morph_webhooks_forget_connection")
