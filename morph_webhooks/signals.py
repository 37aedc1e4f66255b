"""Signals sent when an event changes an opportunity.

Every signal is sent with ``sender=Opportunity`` and these keyword arguments:

- ``instance``: the saved :class:`~morph_webhooks.models.Opportunity`.
- ``event``: the :class:`~morph_webhooks.events.MorphEvent` that was applied (event type,
  ``connector_id``, ``owner_id``, ``idempotency_key``, ``remote_id`` and the JSON ``payload``).
- ``created``: ``True`` when this event created the local row.

They are sent inside the database transaction that applied the event, and only when it was
applied (never for a duplicate, stale or ignored event). A receiver's own writes commit or roll
back with the event; if a receiver raises, everything rolls back and the event is tried again
later: Morph is answered 500 and retries, or, in deferred mode, a worker retries it (see
``delivery_failed``). Receivers that talk to the outside world (mail, HTTP, queues) should defer that work
with ``transaction.on_commit`` so it happens only once the event is stored.
"""

from __future__ import annotations

from django.dispatch import Signal

opportunity_created = Signal()
opportunity_updated = Signal()
opportunity_deleted = Signal()

# Deferred mode: a delivery failed MAX_ATTEMPTS times and was marked dead; nothing retries it any
# more until someone reprocesses it. Sent with ``sender=WebhookDelivery`` and keyword arguments
# ``delivery`` (the dead WebhookDelivery, whose ``error`` holds the last traceback) and
# ``exception`` (the last exception). Sent after the failure was recorded, outside any transaction.
delivery_failed = Signal()
