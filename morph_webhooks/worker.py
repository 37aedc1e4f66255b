"""Deferred mode's own worker, for ``QUEUE = "deliveries"``: the queued deliveries are the queue.

With ``QUEUE = "tasks"`` every delivery gets a task, and a task backend's worker pays its own
bookkeeping around each one (django-tasks-db: find the next task, claim it, record its result;
three statements and two commits), which takes longer than applying the delivery. Here a worker
claims the delivery that is due next straight from its table and applies it with the code a task
runs (:func:`morph_webhooks.intake.apply_attempt`): retries, giving up and the metrics are the same.

A claim leases one delivery, the one about to be applied: its ``next_attempt_at`` moves
PENDING_TIMEOUT ahead, and its attempt is counted in the same committed UPDATE, before anything is
applied. A worker that dies applying it (killed, out of memory, a receiver that ends the process)
delays that delivery alone by the lease, after which any worker takes it: no sweeper is needed; and
the attempts it died in count, so a delivery that kills every worker ends ``dead`` after
MAX_ATTEMPTS like one that fails. Claiming several at a time would hold the others hostage to the
one that kills its worker. On PostgreSQL workers skip the row another one is claiming (``SKIP
LOCKED``) rather than wait for it. A delivery applied twice (its lease ran out under a stuck
worker) is harmless: its key settles it once.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.db import DatabaseError, connections
from django.utils import timezone

from .apply import give_up
from .conf import conf
from .intake import apply_attempt
from .models import Outcome, WebhookDelivery
from .statements import claim_due

logger = logging.getLogger(__name__)

# The longest wait between two claims while the database cannot be reached.
MAX_RECONNECT_DELAY = 30.0


class WorkerDied(Exception):
    """A delivery's last attempt never ended: the process applying it died."""


def claim() -> WebhookDelivery | None:
    """Lease the queued delivery due the longest, and count its attempt; None when none is due."""
    now = timezone.now()
    leased_until = now + timedelta(seconds=conf.PENDING_TIMEOUT)
    # One statement, committed before the delivery is applied: an attempt its worker dies in counts.
    delivery = claim_due(WebhookDelivery, Outcome.QUEUED.value, now, leased_until)
    assert delivery is None or isinstance(delivery, WebhookDelivery)
    return delivery


class Worker:
    """Claims and applies queued deliveries, one at a time, until :meth:`stop` (or, with
    ``until_empty``, until none is due), waiting ``interval`` seconds whenever none is."""

    def __init__(self, *, interval: float = 1.0, until_empty: bool = False) -> None:
        self.interval = interval
        self.until_empty = until_empty
        self.stopping = threading.Event()
        self.handled = 0  # applied, or failed and recorded so
        self.failed = 0

    def stop(self) -> None:
        """Finish the delivery being applied, and return."""
        self.stopping.set()

    def run(self) -> int:
        """Returns how many deliveries were handled: applied, or failed (and recorded so)."""
        logger.info("Applying queued deliveries, looking again every %g s when none is due", self.interval)
        unreachable = 0  # claims failed in a row
        while not self.stopping.is_set():
            try:
                delivery = claim()
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
                _drop_old_connections()
                self.stopping.wait(delay)
                continue
            unreachable = 0
            if delivery is not None:
                # The connection is kept from one delivery to the next: with CONN_MAX_AGE = 0,
                # Django's default, dropping it here would open a connection per delivery.
                self._apply(delivery)
            elif self.until_empty:
                break
            else:
                _drop_old_connections()
                self.stopping.wait(self.interval)
        _drop_old_connections()
        return self.handled

    def _apply(self, delivery: WebhookDelivery) -> None:
        try:
            if delivery.attempts > conf.MAX_ATTEMPTS:
                _give_up_after_deaths(delivery)
            else:
                apply_attempt(delivery)
        except Exception:
            # Already recorded on the delivery (its traceback, and its next attempt or its death);
            # were even that impossible, its lease runs out and a worker claims it again. One
            # delivery's failure must not stop the others.
            logger.exception("Delivery %s failed; see its record in the admin", delivery.pk)
            self.failed += 1
        self.handled += 1


def _give_up_after_deaths(delivery: WebhookDelivery) -> None:
    """The delivery's last attempt (its MAX_ATTEMPTS-th) never ended: a worker died in it, and
    whatever killed it would kill the next. Record it dead, as after a last failed attempt."""
    delivery.attempts -= 1  # claimed to give up, not attempted
    exc = WorkerDied(
        f"Gave up after {delivery.attempts} attempts (MAX_ATTEMPTS): the last never ended, the "
        "worker applying it died (killed, out of memory, or a receiver ended the process)."
    )
    give_up(delivery, exc)
    raise exc


def _drop_old_connections() -> None:
    """Django's ``close_old_connections``, as between requests, whenever the worker waits (none
    due, or a claim failed): close the connections that broke or outlived CONN_MAX_AGE, so that the
    next claim opens a new one. A delivery that failed on a broken connection closed it already
    (see apply._record_failure). But not one in a transaction (a worker run inside a
    test's), which that function would close under the caller."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
