"""Where every delivery enters: a request's at the endpoint, a logged one's when it is
reprocessed, a queued one's in a worker. From its body and headers to a validated event that the
policy lets in, the delivery identified, or to a rejection recorded on the delivery; the event is
then applied or queued (:mod:`morph_webhooks.apply`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError
from rest_framework.exceptions import APIException

from .apply import Result, apply_or_queue, process_event, retry_later
from .errors import error_body, http_status_for
from .events import InvalidEvent, MorphEvent
from .models import Connection, Outcome, WebhookDelivery
from .parsing import parse_event
from .policy import check_allowed
from .store import delivery_by_pk, save_delivery

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    """Why a delivery can never be valid: the status and the JSON body Morph is answered, as its
    delivery records them."""

    status: int
    detail: Any


def take_in(
    delivery: WebhookDelivery,
    headers: Mapping[str, str],
    read_body: Callable[[], bytes],
    *,
    admitted: bool = False,
) -> MorphEvent | Rejection:
    """The event in the body that ``read_body`` returns, validated with ``headers`` and let in by
    the policy (unless it was ``admitted`` when it arrived: a queued delivery's), and ``delivery``
    identified as its; or the rejection, recorded on ``delivery`` (which consumes no idempotency
    key). ``read_body`` may refuse the body itself (too large, not JSON): an APIException,
    rejected as the others."""
    try:
        event = parse_event(headers, read_body())
        if not admitted:
            # A replay must not let in what a request could not.
            check_allowed(event)
    except (InvalidEvent, APIException) as exc:
        rejection = Rejection(http_status_for(exc), error_body(exc))
        delivery.reject(rejection.status, rejection.detail)
        save_delivery(delivery)
        return rejection
    delivery.identify(event)
    return event


def receive(
    delivery: WebhookDelivery, headers: Mapping[str, str], read_body: Callable[[], bytes]
) -> Result | Rejection:
    """A request's delivery: taken in, then applied, or queued in deferred mode."""
    event = take_in(delivery, headers, read_body)
    if isinstance(event, Rejection):
        return event
    try:
        return apply_or_queue(event, delivery)
    finally:
        # Whatever became of the event: a connection whose every event fails is one the health
        # check must watch too.
        register_connection(event.connector_id, event.owner_id)


def register_connection(connector_id: str, owner_id: str) -> None:
    """Note the connection of an accepted event, once it is stored or its failure recorded: a sync
    can then read it from Morph's API, the health check watch it. Failing to is logged, not
    answered: Morph would retry an event already stored."""
    try:
        Connection.register(connector_id, owner_id)
    except DatabaseError:
        logger.exception("Could not register the connection %r / %r", connector_id, owner_id)


def run_delivery(delivery_id: int) -> Outcome | None:
    """What a task does with one queued delivery. Returns the outcome, or None when there
    was nothing to do (already settled by another run, or gone)."""
    delivery = delivery_by_pk(delivery_id)
    if delivery is None or delivery.status != Outcome.QUEUED:
        return None
    delivery.begin_attempt()
    return apply_attempt(delivery)


def apply_attempt(delivery: WebhookDelivery) -> Outcome:
    """Apply a queued delivery, as read from the database, its attempt begun: a task's, or one
    that morph_webhooks_worker claimed (the claim records the attempt)."""
    # Valid and let in when it arrived, its key claimed: only a change of the app's rules can
    # reject it now. The policy is not asked again: a queued event is applied as it was accepted.
    event = take_in(delivery, delivery.headers, delivery.received_body, admitted=True)
    if isinstance(event, Rejection):
        return Outcome.REJECTED
    return process_event(event, delivery, on_failure=retry_later, mode="deferred").outcome
