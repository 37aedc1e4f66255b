"""``crmEngagement``: an activity in the CRM (a call, a meeting, an email, a task or a note) and
the users, companies, contacts and opportunities it involves."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..signals import engagement_created, engagement_deleted, engagement_updated
from .base import ID_LENGTH, MirroredResource, Reference, ResourceQuerySet, ResourceSpec, listed_indexes
from .fields import LowerCaseChoiceField, ReferenceField, ResourceFields, TimestampField
from .links import EngagementCompany, EngagementContact, EngagementOpportunity, EngagementUser, Link
from .relations import MirrorReference, Ref

# The largest duration the column holds on every database (a PositiveIntegerField): 68 years.
MAX_DURATION = 2_147_483_647


class EngagementType(models.TextChoices):
    CALL = "call", _("call")
    MEETING = "meeting", _("meeting")
    EMAIL = "email", _("email")
    TASK = "task", _("task")
    NOTE = "note", _("note")


class EngagementDirection(models.TextChoices):
    INBOUND = "inbound", _("inbound")
    OUTBOUND = "outbound", _("outbound")


class EngagementStatus(models.TextChoices):
    PLANNED = "planned", _("planned")
    IN_PROGRESS = "inProgress", _("in progress")
    COMPLETED = "completed", _("completed")
    CANCELED = "canceled", _("canceled")


class EngagementQuerySet(ResourceQuerySet["Engagement"]):
    pass


class Engagement(MirroredResource):
    """The local copy of one CRM engagement. ``crm_owner_id`` is the CRM user who owns it (Morph's
    ``fields.owner``), not the connection owner (``owner_id``, the tenant)."""

    type = models.CharField(_("type"), max_length=16, choices=EngagementType.choices, blank=True, default="")
    direction = models.CharField(
        _("direction"), max_length=16, choices=EngagementDirection.choices, blank=True, default=""
    )
    status = models.CharField(
        _("status"), max_length=16, choices=EngagementStatus.choices, blank=True, default=""
    )
    title = models.CharField(_("title"), max_length=250, blank=True, default="")
    description = models.TextField(_("description"), blank=True, default="")
    # Null until an event gives them: an update may arrive before the engagement's created event.
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    duration = models.PositiveIntegerField(_("duration (seconds)"), null=True, blank=True)
    crm_owner_id = models.CharField(_("owner"), max_length=ID_LENGTH, blank=True, default="")
    user_ids = models.JSONField(_("users"), default=list, blank=True)
    company_ids = models.JSONField(_("companies"), default=list, blank=True)
    contact_ids = models.JSONField(_("contacts"), default=list, blank=True)
    opportunity_ids = models.JSONField(_("opportunities"), default=list, blank=True)

    # The relations over the ids above, within the engagement's connection (see .relations).
    crm_owner_ref = Ref(source="crm_owner_id")
    crm_owner = MirrorReference(
        "morph_webhooks.CrmUser",
        morph_id="crm_owner_id",
        ref="crm_owner_ref",
        related_name="owned_engagements",
        verbose_name=_("owner"),
    )
    users = models.ManyToManyField(
        "morph_webhooks.CrmUser", through=EngagementUser, related_name="engagements", blank=True
    )
    companies = models.ManyToManyField(
        "morph_webhooks.Company", through=EngagementCompany, related_name="engagements", blank=True
    )
    contacts = models.ManyToManyField(
        "morph_webhooks.Contact", through=EngagementContact, related_name="engagements", blank=True
    )
    opportunities = models.ManyToManyField(
        "morph_webhooks.Opportunity", through=EngagementOpportunity, related_name="engagements", blank=True
    )

    objects = EngagementQuerySet.as_manager()

    class Meta(MirroredResource.Meta):
        verbose_name = _("engagement")
        verbose_name_plural = _("engagements")
        indexes = [
            *listed_indexes("morph_eng"),
            models.Index(fields=["crm_owner_ref"], name="morph_eng_crm_owner_ref_idx"),
        ]

    def __str__(self) -> str:
        return self.title or self.remote_id


class EngagementFields(ResourceFields):
    """``data.fields`` of a crmEngagement; Morph requires ``type`` and ``startedAt`` when it
    creates one."""

    required_when_created = ("type", "startedAt")

    type = LowerCaseChoiceField(choices=EngagementType.values)
    direction = serializers.ChoiceField(choices=EngagementDirection.values, allow_null=True)
    status = serializers.ChoiceField(choices=EngagementStatus.values, allow_null=True)
    # Morph bounds neither; the title's column is a name's.
    title = serializers.CharField(max_length=250, allow_blank=True, allow_null=True, trim_whitespace=False)
    description = serializers.CharField(allow_blank=True, allow_null=True, trim_whitespace=False)
    startedAt = TimestampField(source="started_at")
    endedAt = TimestampField(source="ended_at", allow_null=True)
    duration = serializers.IntegerField(min_value=0, max_value=MAX_DURATION, allow_null=True)
    owner = ReferenceField(source="crm_owner_id", allow_null=True)
    users = serializers.ListField(child=ReferenceField(), source="user_ids", allow_null=True)
    companies = serializers.ListField(child=ReferenceField(), source="company_ids", allow_null=True)
    contacts = serializers.ListField(child=ReferenceField(), source="contact_ids", allow_null=True)
    opportunities = serializers.ListField(child=ReferenceField(), source="opportunity_ids", allow_null=True)


SPEC = ResourceSpec(
    morph_model="crmEngagement",
    model=Engagement,
    fields=EngagementFields,
    signals={"created": engagement_created, "updated": engagement_updated, "deleted": engagement_deleted},
    admin_columns=("type", "title", "status", "direction", "started_at"),
    references=(
        Reference("crm_owner", "crm_owner_id", "genericUser", _("owner")),
        Reference("users", "user_ids", "genericUser", _("users"), many=True),
        Reference("companies", "company_ids", "genericCompany", _("companies"), many=True),
        Reference("contacts", "contact_ids", "genericContact", _("contacts"), many=True),
        Reference("opportunities", "opportunity_ids", "crmOpportunity", _("opportunities"), many=True),
    ),
    links=(
        Link("user_ids", EngagementUser, source="engagement", target="user"),
        Link("company_ids", EngagementCompany, source="engagement", target="company"),
        Link("contact_ids", EngagementContact, source="engagement", target="contact"),
        Link(
            "opportunity_ids",
            EngagementOpportunity,
            source="engagement",
            target="opportunity",
            listed_by="listed_by_engagement",
            listed_by_other="listed_by_opportunity",
        ),
    ),
)
