"""``crmPipeline``: a sales pipeline, the ordered stages a deal moves through."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..signals import pipeline_created, pipeline_deleted, pipeline_updated
from .base import MirroredResource, Reference, ResourceQuerySet, ResourceSpec
from .fields import ReferenceField, ResourceFields


class PipelineQuerySet(ResourceQuerySet["Pipeline"]):
    pass


class Pipeline(MirroredResource):
    name = models.CharField(_("name"), max_length=250, blank=True, default="")
    stage_ids = models.JSONField(_("stages"), default=list, blank=True)

    objects = PipelineQuerySet.as_manager()

    class Meta(MirroredResource.Meta):
        verbose_name = _("pipeline")
        verbose_name_plural = _("pipelines")


class PipelineFields(ResourceFields):
    name = serializers.CharField(min_length=1, max_length=250, allow_null=True, trim_whitespace=False)
    stages = serializers.ListField(child=ReferenceField(), source="stage_ids", allow_null=True)


SPEC = ResourceSpec(
    morph_model="crmPipeline",
    model=Pipeline,
    fields=PipelineFields,
    signals={"created": pipeline_created, "updated": pipeline_updated, "deleted": pipeline_deleted},
    admin_columns=("name",),
    references=(Reference("stages", "stage_ids", "crmStage", _("stages"), many=True),),
)
