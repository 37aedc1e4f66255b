"""One row per signal, written in the transaction that applies the event.

Because the row is written inside that transaction, an event that rolls back (a receiver
failure, a retried collision between concurrent deliveries) leaves no row: the table holds
exactly the signals whose effects were committed, which is what "each exactly once" is about.
"""

from __future__ import annotations

import os
from typing import Any

from django.db import connection
from django.dispatch import Signal

from morph_webhooks.events import MorphEvent
from morph_webhooks.models import Opportunity
from morph_webhooks.signals import opportunity_created, opportunity_deleted, opportunity_updated

from .models import SignalRecord

NAMES: dict[Signal, str] = {
    opportunity_created: "opportunity_created",
    opportunity_updated: "opportunity_updated",
    opportunity_deleted: "opportunity_deleted",
}


def connect() -> None:
    # dispatch_uid: connecting twice must not record every signal twice (that would look like a bug
    # in the app).
    for sent_signal, name in NAMES.items():
        sent_signal.connect(record, sender=Opportunity, dispatch_uid=f"soak.signal_log.{name}")


def record(
    sender: type[Opportunity],
    instance: Opportunity,
    event: MorphEvent,
    created: bool,
    signal: Signal,
    **kwargs: Any,
) -> None:
    assert event.remote_updated_at is not None
    SignalRecord.objects.create(
        signal=NAMES[signal],
        connector_id=event.connector_id,
        owner_id=event.owner_id,
        idempotency_key=event.idempotency_key,
        remote_id=event.remote_id,
        remote_updated_at=event.remote_updated_at,
        created=created,
        opportunity_pk=instance.pk,
        in_atomic_block=connection.in_atomic_block,
        worker_pid=os.getpid(),
    )
