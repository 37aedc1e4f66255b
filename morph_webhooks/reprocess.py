"""Running logged deliveries through validation and processing again: the admin's action and
the ``morph_webhooks_reprocess`` command."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable

from .apply import Result, apply_or_queue
from .conf import conf
from .errors import REFUSED_REQUESTS
from .intake import Rejection, take_in
from .models import Outcome, WebhookDelivery
from .store import save_reprocessed

logger = logging.getLogger(__name__)

# Deliveries whose event was settled when they ran: applied, found stale or ignored by them, or
# already applied by another delivery of the same key. Their outcome is history and stays.
SETTLED = (Outcome.PROCESSED, Outcome.STALE, Outcome.IGNORED, Outcome.DUPLICATE)
ALREADY_APPLIED = "already applied"


def reprocess_delivery(delivery: WebhookDelivery) -> Result:
    """Run a logged request through validation and processing again.

    A delivery that is still invalid, or whose request was refused before any body could be
    read, is rejected (with the current error, its ``reason``). A settled delivery keeps its
    outcome and its key is not counted again: the result says it was already applied. A failed
    delivery whose event another delivery applied meanwhile becomes a duplicate, exactly as a
    re-sent one. In deferred mode the delivery is queued for a worker again rather than processed
    here. A failure is recorded on the delivery and raised.
    """
    if delivery.http_status in REFUSED_REQUESTS:
        return Result(Outcome.REJECTED, reason=delivery.error)
    if delivery.status in SETTLED:
        delivery.mark_reprocessed()
        save_reprocessed(delivery)
        return Result(Outcome(delivery.status), already_applied=True)
    delivery.mark_reprocessed()
    attempts = delivery.attempts
    # Rejected again or run here, it is one more attempt (saved with what became of it).
    delivery.begin_attempt()
    event = take_in(delivery, delivery.headers, delivery.received_body)
    if isinstance(event, Rejection):
        return Result(Outcome.REJECTED, reason=delivery.error)
    if conf.DEFERRED:
        # Queued again, its worker counts the attempts.
        delivery.attempts = attempts
    return apply_or_queue(event, delivery)


def reprocess_outcome(result: Result) -> str:
    """What one reprocess came to, in the words of the admin's message and the command's output."""
    return ALREADY_APPLIED if result.already_applied else result.outcome


def reprocess_many(
    deliveries: Iterable[WebhookDelivery],
    on_failure: Callable[[WebhookDelivery, Exception], None] | None = None,
    after_each: Callable[[int, Counter[str]], None] | None = None,
) -> Counter[str]:
    """Reprocess each delivery in the order given (arrival order is the order Morph meant them
    in). A failure is recorded on its delivery and counted, and the others still run. Returns how
    many came to each :func:`reprocess_outcome` (or ``failed``); ``after_each`` is told how many
    were done and the counts so far."""
    summary: Counter[str] = Counter()
    for done, delivery in enumerate(deliveries, start=1):
        try:
            result = reprocess_delivery(delivery)
        except Exception as exc:
            summary[Outcome.FAILED] += 1
            (on_failure or _log_failure)(delivery, exc)
        else:
            summary[reprocess_outcome(result)] += 1
        if after_each is not None:
            after_each(done, summary)
    return summary


def _log_failure(delivery: WebhookDelivery, exc: Exception) -> None:
    logger.error("Reprocessing delivery %s failed", delivery.pk, exc_info=exc)
