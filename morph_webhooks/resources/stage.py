"""``crmStage``: a stage of a pipeline; its ``type`` says whether a deal there is open, won or lost."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..signals import stage_created, stage_deleted, stage_updated
from .base import ID_LENGTH, MirroredResource, Reference, ResourceQuerySet, ResourceSpec
from .fields import ReferenceField, ResourceFields, UpperCaseChoiceField
from .relations import MirrorReference, Ref


class StageType(models.TextChoices):
    OPEN = "OPEN", _("open")
    WON = "WON", _("won")
    LOST = "LOST", _("lost")
    UNKNOWN = "UNKNOWN", _("unknown")


class StageQuerySet(ResourceQuerySet["Stage"]):
    pass


class Stage(MirroredResource):
    name = models.CharField(_("name"), max_length=250, blank=True, default="")
    type = models.CharField(_("type"), max_length=16, choices=StageType.choices, blank=True, default="")
    pipeline_id = models.CharField(_("pipeline"), max_length=ID_LENGTH, blank=True, default="")
    pipeline_ref = Ref(source="pipeline_id")
    pipeline = MirrorReference(
        "morph_webhooks.Pipeline",
        morph_id="pipeline_id",
        ref="pipeline_ref",
        related_name="stages",
        verbose_name=_("pipeline"),
    )

    objects = StageQuerySet.as_manager()

    class Meta(MirroredResource.Meta):
        verbose_name = _("stage")
        verbose_name_plural = _("stages")
        indexes = [models.Index(fields=["pipeline_ref"], name="morph_stage_pipeline_ref_idx")]


class StageFields(ResourceFields):
    name = serializers.CharField(min_length=1, max_length=250, allow_null=True, trim_whitespace=False)
    type = UpperCaseChoiceField(choices=StageType.values, allow_null=True)
    pipeline = ReferenceField(source="pipeline_id", allow_null=True)


SPEC = ResourceSpec(
    morph_model="crmStage",
    model=Stage,
    fields=StageFields,
    signals={"created": stage_created, "updated": stage_updated, "deleted": stage_deleted},
    admin_columns=("name", "type", "pipeline_id"),
    references=(Reference("pipeline", "pipeline_id", "crmPipeline", _("pipeline")),),
)
