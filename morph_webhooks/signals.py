"""Signals sent when an event changes a mirrored resource, when any event is applied, and when a
delivery dies.

Each Morph model the app mirrors has three, named after the model and the action
(``opportunity_created``, ``opportunity_updated``, ``opportunity_deleted``); its
:class:`~morph_webhooks.resources.base.ResourceSpec` says which. Each is sent with ``sender`` the
model class and these keyword arguments:

- ``instance``: the saved row (e.g. an :class:`~morph_webhooks.models.Opportunity`).
- ``event``: the :class:`~morph_webhooks.events.ResourceEvent` that was applied (event type,
  ``connector_id``, ``owner_id``, ``idempotency_key``, ``remote_id``, ``changes`` and the JSON
  ``payload``).
- ``created``: ``True`` when this event created the local row.

They are sent inside the database transaction that applied the event, and only when it was
applied (never for a duplicate, stale or ignored event). A receiver's own writes commit or roll
back with the event; if a receiver raises, everything rolls back: in sync mode Morph is answered
500 so it retries, in deferred mode the worker retries the delivery. Receivers that talk to the
outside world (mail, HTTP, queues) should defer that work with ``transaction.on_commit`` so it
happens only once the event is stored.
"""

from __future__ import annotations

from django.dispatch import Signal

# Defined here, not beside their models, so that a project can import this module anywhere,
# its AppConfig module included, before the app registry is ready.
opportunity_created = Signal()
opportunity_updated = Signal()
opportunity_deleted = Signal()
pipeline_created = Signal()
pipeline_updated = Signal()
pipeline_deleted = Signal()
stage_created = Signal()
stage_updated = Signal()
stage_deleted = Signal()
crm_user_created = Signal()
crm_user_updated = Signal()
crm_user_deleted = Signal()
company_created = Signal()
company_updated = Signal()
company_deleted = Signal()
contact_created = Signal()
contact_updated = Signal()
contact_deleted = Signal()
engagement_created = Signal()
engagement_updated = Signal()
engagement_deleted = Signal()
workspace_created = Signal()
workspace_updated = Signal()
workspace_deleted = Signal()

# Sent when an applied opportunity event changes ``stage_id`` (a create with a stage included),
# after ``opportunity_created``/``opportunity_updated``, with ``sender=Opportunity`` and keyword
# arguments ``instance``, ``event``, ``previous_stage_id`` ("" for none) and ``stage``: the
# :class:`~morph_webhooks.models.Stage` now set, or ``None`` while it has not arrived. How a project
# reacts to a deal being won: ``stage is not None and stage.type == "WON"``.
opportunity_stage_changed = Signal()

# Sent once for every event applied, after the signals above, whether its Morph model is mirrored
# (outcome "processed") or not (outcome "ignored": telephonyCall...); never for a
# duplicate or a stale event, which change nothing, nor for what a sync reads from Morph's API.
# Sent with ``sender=MorphEvent`` and keyword arguments ``event`` (the
# :class:`~morph_webhooks.events.MorphEvent`: ``type``, ``model``, ``action``, ``remote_id``,
# ``idempotency_key``, ``payload``...; a ``ResourceEvent`` for a mirrored model), ``outcome``
# ("processed" or "ignored"), ``connector_id`` and ``owner_id`` (the connection it came from).
# Inside the transaction, as the others: a receiver that raises rolls the event back and Morph
# retries it. morph_webhooks_check's test event (a telephonyCall whose id starts with
# "morph-webhooks-check-") reaches it too.
event_received = Signal()

# Sent when a delivery queued in deferred mode is given up and marked dead: nothing retries it any
# more until someone reprocesses it. That is after MAX_ATTEMPTS attempts that failed (or that its
# worker died in), or at its first failure where nothing would retry it: in a worker running with
# deferred mode turned off, or when a queued delivery is reprocessed outside deferred mode. Sent
# with ``sender=WebhookDelivery`` and keyword arguments ``delivery`` (the dead WebhookDelivery,
# whose ``error`` holds the last traceback) and ``exception`` (the last exception). Sent after the
# failure was recorded, outside any transaction.
delivery_failed = Signal()
