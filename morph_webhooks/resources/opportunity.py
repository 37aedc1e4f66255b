"""``crmOpportunity``: a deal in the CRM."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..events import ResourceEvent
from ..signals import opportunity_created, opportunity_deleted, opportunity_stage_changed, opportunity_updated
from .base import ID_LENGTH, MirroredResource, Reference, ResourceQuerySet, ResourceSpec, listed_indexes
from .fields import AmountField, ReferenceField, ResourceFields
from .links import EngagementOpportunity, Link, OpportunityCompany, OpportunityContact
from .relations import MirrorReference, Ref
from .stage import Stage


class OpportunityQuerySet(ResourceQuerySet["Opportunity"]):
    pass


class Opportunity(MirroredResource):
    """The local copy of one CRM opportunity, as last described by Morph.

    ``owner_id`` is Morph's connection owner (the tenant); ``crm_owner_id`` is the CRM user who
    owns the opportunity (Morph's ``fields.owner``).
    """

    name = models.CharField(max_length=250, blank=True, default="")
    amount = models.DecimalField(max_digits=24, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, default="")
    stage_id = models.CharField(max_length=ID_LENGTH, blank=True, default="")
    pipeline_id = models.CharField(max_length=ID_LENGTH, blank=True, default="")
    crm_owner_id = models.CharField(max_length=ID_LENGTH, blank=True, default="")
    contact_ids = models.JSONField(default=list, blank=True)
    company_ids = models.JSONField(default=list, blank=True)
    engagement_ids = models.JSONField(default=list, blank=True)

    # The relations over the ids above, within the opportunity's connection (see .relations).
    stage_ref = Ref(source="stage_id")
    pipeline_ref = Ref(source="pipeline_id")
    crm_owner_ref = Ref(source="crm_owner_id")
    stage = MirrorReference(
        Stage, morph_id="stage_id", ref="stage_ref", related_name="opportunities", verbose_name=_("stage")
    )
    pipeline = MirrorReference(
        "morph_webhooks.Pipeline",
        morph_id="pipeline_id",
        ref="pipeline_ref",
        related_name="opportunities",
        verbose_name=_("pipeline"),
    )
    crm_owner = MirrorReference(
        "morph_webhooks.CrmUser",
        morph_id="crm_owner_id",
        ref="crm_owner_ref",
        related_name="opportunities",
        verbose_name=_("owner"),
    )
    contacts = models.ManyToManyField(
        "morph_webhooks.Contact", through=OpportunityContact, related_name="opportunities", blank=True
    )
    companies = models.ManyToManyField(
        "morph_webhooks.Company", through=OpportunityCompany, related_name="opportunities", blank=True
    )

    objects = OpportunityQuerySet.as_manager()

    class Meta(MirroredResource.Meta):
        verbose_name = _("opportunity")
        verbose_name_plural = _("opportunities")
        indexes = [
            *listed_indexes("morph_opp", updated=False),
            models.Index(fields=["connector_id"], name="morph_opp_connector_idx"),
            models.Index(fields=["stage_id"], name="morph_opp_stage_idx"),
            models.Index(fields=["pipeline_id"], name="morph_opp_pipeline_idx"),
            models.Index(fields=["remote_updated_at"], name="morph_opp_remote_updated_idx"),
            models.Index(fields=["stage_ref"], name="morph_opp_stage_ref_idx"),
            models.Index(fields=["pipeline_ref"], name="morph_opp_pipeline_ref_idx"),
            models.Index(fields=["crm_owner_ref"], name="morph_opp_crm_owner_ref_idx"),
            models.Index(
                fields=["deleted_at"], condition=Q(deleted_at__isnull=False), name="morph_opp_deleted_idx"
            ),
        ]


class OpportunityFields(ResourceFields):
    """``data.fields`` of a crmOpportunity. Every field is optional; ``source`` is the model field."""

    name = serializers.CharField(min_length=1, max_length=250, allow_null=True, trim_whitespace=False)
    amount = AmountField(allow_null=True)
    currency = serializers.RegexField(
        r"^[A-Za-z]{3}$",
        allow_null=True,
        error_messages={"invalid": "Expected a 3-letter currency code."},
    )
    stage = ReferenceField(source="stage_id", allow_null=True)
    pipeline = ReferenceField(source="pipeline_id", allow_null=True)
    owner = ReferenceField(source="crm_owner_id", allow_null=True)
    contacts = serializers.ListField(child=ReferenceField(), source="contact_ids", allow_null=True)
    companies = serializers.ListField(child=ReferenceField(), source="company_ids", allow_null=True)
    engagements = serializers.ListField(child=ReferenceField(), source="engagement_ids", allow_null=True)

    def validate_currency(self, value: str | None) -> str | None:
        return value.upper() if value else value


def announce_stage_change(event: ResourceEvent, row: MirroredResource, before: Mapping[str, Any]) -> None:
    """Send ``opportunity_stage_changed`` when the event moved the deal to another stage (or gave
    a new deal its first): how a project learns that a deal was won."""
    assert isinstance(row, Opportunity)
    previous = before.get("stage_id", "")
    if "stage_id" not in event.changes or row.stage_id == previous:
        return
    if not opportunity_stage_changed.has_listeners(Opportunity):
        return  # no one would see the stage: spare every event its query
    # One query, only on a change with a receiver; None while the stage has not arrived yet.
    stage = (
        Stage.objects.filter(
            connector_id=row.connector_id, owner_id=row.owner_id, remote_id=row.stage_id
        ).first()
        if row.stage_id
        else None
    )
    opportunity_stage_changed.send(
        sender=Opportunity, instance=row, event=event, previous_stage_id=previous, stage=stage
    )


SPEC = ResourceSpec(
    morph_model="crmOpportunity",
    model=Opportunity,
    fields=OpportunityFields,
    signals={"created": opportunity_created, "updated": opportunity_updated, "deleted": opportunity_deleted},
    admin_columns=("name", "amount", "stage_id", "pipeline_id"),
    references=(
        Reference("stage", "stage_id", "crmStage", _("stage")),
        Reference("pipeline", "pipeline_id", "crmPipeline", _("pipeline")),
        Reference("crm_owner", "crm_owner_id", "genericUser", _("owner")),
        Reference("contacts", "contact_ids", "genericContact", _("contacts"), many=True),
        Reference("companies", "company_ids", "genericCompany", _("companies"), many=True),
    ),
    links=(
        Link("contact_ids", OpportunityContact, source="opportunity", target="contact"),
        Link("company_ids", OpportunityCompany, source="opportunity", target="company"),
        Link(
            "engagement_ids",
            EngagementOpportunity,
            source="opportunity",
            target="engagement",
            listed_by="listed_by_opportunity",
            listed_by_other="listed_by_engagement",
        ),
    ),
    after_apply=announce_stage_change,
)
