"""Deferred mode's own worker, for ``QUEUE = "deliveries"``: the queued deliveries are the queue.

With ``QUEUE = "tasks"`` every delivery gets a task, and a task backend's worker pays its own
bookkeeping around each one (django-tasks-db: find the next task, claim it, record its result;
three statements and two commits), which takes longer than applying the delivery. Here a worker
claims the deliveries that are due several at a time, straight from their table, and applies each
with the code a task runs (:func:`morph_webhooks.queue.apply_delivery`): retries, giving up
and the metrics are the same.

A claim leases the deliveries it takes: their ``next_attempt_at`` moves PENDING_TIMEOUT ahead.
A worker that dies holding some delays them by that much, after which any worker takes them: no
sweeper is needed. On PostgreSQL workers skip the rows another one is claiming (``SKIP LOCKED``)
rather than wait for it. A delivery applied twice (its lease ran out under a stuck worker) is
harmless: its key settles it once.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.db import DatabaseError, connections, router, transaction
from django.utils import timezone

from .conf import conf
from .models import Outcome, WebhookDelivery
from .queue import apply_delivery

logger = logging.getLogger(__name__)

# The longest wait between two claims while the database cannot be reached.
MAX_RECONNECT_DELAY = 30.0


def claim(limit: int) -> list[WebhookDelivery]:
    """Lease up to ``limit`` queued deliveries that are due, the longest waiting first."""
    now = timezone.now()
    with transaction.atomic(using=router.db_for_write(WebhookDelivery)):
        due = WebhookDelivery.objects.filter(status=Outcome.QUEUED, next_attempt_at__lte=now)
        # SQLite has no row locks (select_for_update does nothing there): its writers take turns.
        deliveries = list(due.order_by("next_attempt_at").select_for_update(skip_locked=True)[:limit])
        if deliveries:
            leased_until = now + timedelta(seconds=conf.PENDING_TIMEOUT)
            WebhookDelivery.objects.filter(pk__in=[delivery.pk for delivery in deliveries]).update(
                next_attempt_at=leased_until
            )
            for delivery in deliveries:
                delivery.next_attempt_at = leased_until
    return deliveries


def release(deliveries: list[WebhookDelivery]) -> int:
    """Give back deliveries of one claim not applied (the worker is stopping): due again now,
    unless another run settled them or took them since (their lease is no longer the claim's)."""
    if not deliveries:
        return 0
    return WebhookDelivery.objects.filter(
        pk__in=[delivery.pk for delivery in deliveries],
        status=Outcome.QUEUED,
        next_attempt_at=deliveries[0].next_attempt_at,  # the claim's lease, the same for each
    ).update(next_attempt_at=timezone.now())


class Worker:
    """Claims and applies queued deliveries until :meth:`stop` (or, with ``until_empty``, until
    none is due), waiting ``interval`` seconds whenever none is.

    A claim's rows are applied as read when claimed, up to a few deliveries later: the lease keeps
    other workers off them, and a change made meanwhile elsewhere (a replay from the admin) is
    settled by the key, which applies each event once."""

    def __init__(self, *, claim_size: int = 10, interval: float = 1.0, until_empty: bool = False) -> None:
        self.claim_size = claim_size
        self.interval = interval
        self.until_empty = until_empty
        self.stopping = threading.Event()
        self.handled = 0  # applied, or failed and recorded so
        self.failed = 0

    def stop(self) -> None:
        """Finish the delivery being applied, give the rest of the claim back, and return."""
        self.stopping.set()

    def run(self) -> int:
        """Returns how many deliveries were handled: applied, or failed (and recorded so)."""
        logger.info(
            "Applying queued deliveries: up to %d per claim, looking again every %g s when none is due",
            self.claim_size,
            self.interval,
        )
        unreachable = 0  # claims failed in a row
        while not self.stopping.is_set():
            _drop_old_connections()
            try:
                deliveries = claim(self.claim_size)
            except DatabaseError as exc:
                if self.until_empty:
                    raise  # a batch run (cron) reports it and ends
                # The database restarted, failed over or is down: the next claim reconnects (the
                # broken connection is dropped first), waiting longer each time meanwhile.
                unreachable += 1
                delay = min(self.interval * 2**unreachable, MAX_RECONNECT_DELAY)
                logger.warning(
                    "Cannot claim deliveries (%s: %s); trying again in %g s", type(exc).__name__, exc, delay
                )
                self.stopping.wait(delay)
                continue
            unreachable = 0
            for index, delivery in enumerate(deliveries):
                if self.stopping.is_set():
                    release(deliveries[index:])
                    break
                self._apply(delivery)
            if not deliveries:
                if self.until_empty:
                    break
                self.stopping.wait(self.interval)
        _drop_old_connections()
        return self.handled

    def _apply(self, delivery: WebhookDelivery) -> None:
        try:
            apply_delivery(delivery)
        except Exception:
            # Already recorded on the delivery (its traceback, and its next attempt or its death);
            # were even that impossible, its lease runs out and a worker claims it again. One
            # delivery's failure must not stop the others.
            logger.exception("Delivery %s failed; see its record in the admin", delivery.pk)
            self.failed += 1
        self.handled += 1


def _drop_old_connections() -> None:
    """Django's ``close_old_connections``, as around a request: close the connections that broke
    or outlived CONN_MAX_AGE, so that the next claim opens a new one. But not one in a transaction
    (a worker run inside a test's), which that function would close under the caller."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
