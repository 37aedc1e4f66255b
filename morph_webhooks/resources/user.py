"""``genericUser``: a user of the CRM, such as the owner of a deal."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..serializers import ResourceFields
from ..signals import crm_user_created, crm_user_deleted, crm_user_updated
from .base import MirroredResource, ResourceQuerySet, ResourceSpec


class CrmUserQuerySet(ResourceQuerySet["CrmUser"]):
    pass


class CrmUser(MirroredResource):
    """A CRM user. Named so beside Django's own users: this one only mirrors the CRM's."""

    first_name = models.CharField(_("first name"), max_length=250, blank=True, default="")
    last_name = models.CharField(_("last name"), max_length=250, blank=True, default="")
    email = models.CharField(_("email"), max_length=250, blank=True, default="")

    objects = CrmUserQuerySet.as_manager()

    class Meta(MirroredResource.Meta):
        verbose_name = _("CRM user")
        verbose_name_plural = _("CRM users")

    def __str__(self) -> str:
        return " ".join(filter(None, [self.first_name, self.last_name])) or self.email or self.remote_id


class CrmUserFields(ResourceFields):
    firstName = serializers.CharField(
        source="first_name", min_length=1, max_length=250, allow_null=True, trim_whitespace=False
    )
    lastName = serializers.CharField(
        source="last_name", min_length=1, max_length=250, allow_null=True, trim_whitespace=False
    )
    email = serializers.EmailField(min_length=5, max_length=250, allow_null=True)


SPEC = ResourceSpec(
    morph_model="genericUser",
    model=CrmUser,
    fields=CrmUserFields,
    signals={"created": crm_user_created, "updated": crm_user_updated, "deleted": crm_user_deleted},
    admin_columns=("first_name", "last_name", "email"),
)
