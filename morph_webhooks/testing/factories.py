"""factory-boy factories for the app's models (the ``testing`` extra).

They write rows directly, as fixtures for code that reads them; to test what happens when Morph
sends an event, post one with :func:`morph_webhooks.testing.post_event` instead. The defaults
match :mod:`morph_webhooks.testing`'s: connector ``hubspot``, owner ``tenant_1``, and a
``remote_updated_at`` older than :func:`~morph_webhooks.testing.opportunity_event`'s default
``updatedAt``, so that a default event posted for a factory-made opportunity applies.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Generic, TypeVar

from ..extras import MissingDependency

try:
    from factory.declarations import LazyAttribute, LazyFunction, Sequence, Trait
    from factory.django import DjangoModelFactory
except ImportError as exc:
    raise MissingDependency("morph_webhooks.testing.factories", "factory-boy", "testing") from exc

from django.utils import timezone as django_timezone

from ..models import (
    CrmUser,
    Engagement,
    EngagementDirection,
    EngagementStatus,
    EngagementType,
    IdempotencyKey,
    MirroredResource,
    Opportunity,
    Outcome,
    Pipeline,
    Stage,
    StageType,
    WebhookDelivery,
    Workspace,
)
from ..store import pair_new_rows
from . import morph_headers, opportunity_event

# Before opportunity_event()'s default updatedAt (2025-03-06T09:15:04.596Z).
REMOTE_TIMESTAMP = datetime(2025, 3, 6, 9, 0, tzinfo=timezone.utc)
R = TypeVar("R", bound=MirroredResource)
SETTLED = (Outcome.PROCESSED, Outcome.STALE, Outcome.IGNORED, Outcome.DUPLICATE)


class MirroredResourceFactory(DjangoModelFactory[R], Generic[R]):
    """What every mirrored resource's factory shares: the helpers' connection, and timestamps
    older than their events' default ``updatedAt``. A row created with lists (``contact_ids``...)
    gets their pairs too, as the event path writes them: its many-to-many relations read them."""

    class Meta:
        abstract = True

    @classmethod
    def _create(cls, model_class: type[R], *args: Any, **kwargs: Any) -> R:
        row: R = super()._create(model_class, *args, **kwargs)
        pair_new_rows([row])
        return row

    connector_id = "hubspot"
    owner_id = "tenant_1"
    remote_created_at = REMOTE_TIMESTAMP
    remote_updated_at = REMOTE_TIMESTAMP


class OpportunityFactory(MirroredResourceFactory[Opportunity]):
    """An opportunity as a processed ``crmOpportunity::created`` leaves it.
    ``OpportunityFactory(deleted=True)`` makes one that Morph reported deleted."""

    class Meta:
        model = Opportunity

    class Params:
        deleted = Trait(deleted_at=LazyFunction(django_timezone.now))

    remote_id = Sequence(lambda n: f"opp_{n}")
    name = Sequence(lambda n: f"Opportunity {n}")
    amount = Decimal("12500")
    currency = "EUR"
    stage_id = "stage_qualified"
    pipeline_id = "pipeline_sales"
    crm_owner_id = "user_42"


class PipelineFactory(MirroredResourceFactory[Pipeline]):
    """A pipeline; ``remote_id`` defaults to :class:`OpportunityFactory`'s ``pipeline_id``."""

    class Meta:
        model = Pipeline
        django_get_or_create = ("connector_id", "owner_id", "remote_id")

    remote_id = "pipeline_sales"
    name = "Sales"


class StageFactory(MirroredResourceFactory[Stage]):
    """A stage; ``remote_id`` defaults to :class:`OpportunityFactory`'s ``stage_id``."""

    class Meta:
        model = Stage
        django_get_or_create = ("connector_id", "owner_id", "remote_id")

    remote_id = "stage_qualified"
    name = "Qualified"
    type = StageType.OPEN
    pipeline_id = "pipeline_sales"


class CrmUserFactory(MirroredResourceFactory[CrmUser]):
    """A CRM user; ``remote_id`` defaults to :class:`OpportunityFactory`'s ``crm_owner_id``."""

    class Meta:
        model = CrmUser
        django_get_or_create = ("connector_id", "owner_id", "remote_id")

    remote_id = "user_42"
    first_name = "Ada"
    last_name = "Lovelace"
    email = "ada@example.com"


class EngagementFactory(MirroredResourceFactory[Engagement]):
    """An engagement as a processed ``crmEngagement::created`` leaves it: a completed call owned by
    :class:`OpportunityFactory`'s ``crm_owner_id``. ``EngagementFactory(deleted=True)`` makes one
    that Morph reported deleted."""

    class Meta:
        model = Engagement

    class Params:
        deleted = Trait(deleted_at=LazyFunction(django_timezone.now))

    remote_id = Sequence(lambda n: f"call_{n}")
    type = EngagementType.CALL
    direction = EngagementDirection.OUTBOUND
    status = EngagementStatus.COMPLETED
    title = Sequence(lambda n: f"Call {n}")
    started_at = REMOTE_TIMESTAMP
    duration = 300
    crm_owner_id = "user_42"


class WorkspaceFactory(MirroredResourceFactory[Workspace]):
    class Meta:
        model = Workspace
        django_get_or_create = ("connector_id", "owner_id", "remote_id")

    remote_id = "workspace_1"
    name = "Sales"


class IdempotencyKeyFactory(DjangoModelFactory[IdempotencyKey]):
    """A handled ``x-idempotency-key``: a delivery carrying it is answered ``duplicate``."""

    class Meta:
        model = IdempotencyKey

    connector_id = "hubspot"
    owner_id = "tenant_1"
    key = Sequence(lambda n: f"key_{n}")
    event = "crmOpportunity::created"
    remote_id = Sequence(lambda n: f"opp_{n}")
    outcome = Outcome.PROCESSED


class WebhookDeliveryFactory(DjangoModelFactory[WebhookDelivery]):
    """A logged request carrying a valid ``crmOpportunity::<action>`` event for ``remote_id``,
    as the endpoint records it: reprocessing it from the admin applies the event."""

    class Meta:
        model = WebhookDelivery

    class Params:
        action = "created"
        payload = LazyAttribute(lambda o: opportunity_event(o.action, o.remote_id))

    connector_id = "hubspot"
    owner_id = "tenant_1"
    idempotency_key = Sequence(lambda n: f"delivery_key_{n}")
    remote_id = Sequence(lambda n: f"opp_{n}")
    event = LazyAttribute(lambda o: o.payload["event"])
    path = "/webhooks/morph/"
    headers = LazyAttribute(
        lambda o: {
            **morph_headers(o.idempotency_key, o.connector_id, o.owner_id),
            "content-type": "application/json",
        }
    )
    body = LazyAttribute(lambda o: json.dumps(o.payload))
    status = Outcome.PROCESSED
    http_status = 200
    processed_at = LazyAttribute(lambda o: django_timezone.now() if o.status in SETTLED else None)
