"""``genericWorkspace``: a workspace (an account, a team) of the CRM."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..signals import workspace_created, workspace_deleted, workspace_updated
from .base import MirroredResource, ResourceQuerySet, ResourceSpec
from .fields import ResourceFields


class WorkspaceQuerySet(ResourceQuerySet["Workspace"]):
    pass


class Workspace(MirroredResource):
    name = models.CharField(_("name"), max_length=250, blank=True, default="")

    objects = WorkspaceQuerySet.as_manager()

    class Meta(MirroredResource.Meta):
        # "CRM": the admin's index sorts by name, and the request log's models come last.
        verbose_name = _("CRM workspace")
        verbose_name_plural = _("CRM workspaces")


class WorkspaceFields(ResourceFields):
    required_when_created = ("name",)

    name = serializers.CharField(min_length=1, max_length=250, trim_whitespace=False)


SPEC = ResourceSpec(
    morph_model="genericWorkspace",
    model=Workspace,
    fields=WorkspaceFields,
    signals={"created": workspace_created, "updated": workspace_updated, "deleted": workspace_deleted},
    admin_columns=("name",),
)
