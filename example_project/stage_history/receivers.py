"""Receivers for morph_webhooks' signals: record a StageChange whenever an opportunity's stage moves.

The signals are sent inside the transaction that applies the event, so everything written here
commits or rolls back with the opportunity itself; an exception here makes the app answer 500 and
Morph retry. Anything that talks to the outside world belongs in ``transaction.on_commit``.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction

from morph_webhooks.events import MorphEvent
from morph_webhooks.models import Opportunity
from morph_webhooks.signals import opportunity_created, opportunity_deleted, opportunity_updated

from .models import DELETED, StageChange

logger = logging.getLogger(__name__)


def connect() -> None:
    # dispatch_uid keeps a second call (e.g. a test that calls ready() again) from doubling rows.
    opportunity_created.connect(record_created, sender=Opportunity, dispatch_uid="stage_history.created")
    opportunity_updated.connect(record_updated, sender=Opportunity, dispatch_uid="stage_history.updated")
    opportunity_deleted.connect(record_deleted, sender=Opportunity, dispatch_uid="stage_history.deleted")


def record_created(
    sender: type[Opportunity], instance: Opportunity, event: MorphEvent, created: bool, **kwargs: Any
) -> None:
    # A new opportunity has no history yet, so its initial stage is always recorded. (The signal
    # is also sent when a newer "created" restores a deleted row: that records "(deleted)" -> stage.)
    record(instance, instance.stage_id, event)


def record_updated(
    sender: type[Opportunity], instance: Opportunity, event: MorphEvent, created: bool, **kwargs: Any
) -> None:
    # An update that leaves the stage alone (say, a new amount) records nothing.
    record(instance, instance.stage_id, event)


def record_deleted(
    sender: type[Opportunity], instance: Opportunity, event: MorphEvent, created: bool, **kwargs: Any
) -> None:
    # The app keeps deleted opportunities (soft delete), so the history stays attached to the row
    # and ends with a change to DELETED. A second delete changes nothing and records nothing.
    record(instance, DELETED, event)


def record(opportunity: Opportunity, to_stage_id: str, event: MorphEvent) -> StageChange | None:
    # Comparing with the last *recorded* stage (not the row's previous value) makes the history
    # complete even for events that arrive for an opportunity we never saw created. No race: the
    # app holds a lock on the opportunity's row (or has just inserted it) until the transaction
    # ends, and never applies an event older than the one stored, so changes arrive in order.
    last = StageChange.objects.filter(opportunity=opportunity).order_by("-pk").first()
    from_stage_id = last.to_stage_id if last is not None else ""
    if last is not None and from_stage_id == to_stage_id:
        return None
    change = StageChange.objects.create(
        opportunity=opportunity,
        from_stage_id=from_stage_id,
        to_stage_id=to_stage_id,
        event=event.type,
        changed_at=opportunity.remote_updated_at,
    )
    # This is where a real project would notify Slack, send mail or call its own API. Doing it
    # here directly would be wrong twice: it would happen even if the transaction then rolls back,
    # and it would hold the database transaction open while waiting for the network. on_commit
    # runs it only once the change is stored. robust=True logs a failure of the callback instead of
    # raising it: the event is already committed, so an error there must not turn into a 500
    # (Morph would retry, and the retry would only be answered "duplicate").
    # The stage itself, read through the relation: the stage of the deal's own connection (another
    # tenant's CRM may use the same id), or None while Morph has not sent it.
    stage = opportunity.stage if to_stage_id != DELETED else None
    now_in = f"{stage.name!r} ({stage.type})" if stage is not None else "a stage not received yet"
    transaction.on_commit(
        partial(announce, opportunity.pk, str(opportunity), from_stage_id, to_stage_id, now_in), robust=True
    )
    return change


def announce(opportunity_pk: int, name: str, from_stage_id: str, to_stage_id: str, now_in: str) -> None:
    logger.info(
        "Opportunity %s (%r) moved from %s to %s, now in %s",
        opportunity_pk,
        name,
        from_stage_id or "-",
        to_stage_id or "-",
        now_in,
    )
