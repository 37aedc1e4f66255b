"""``genericUser``: a user of the CRM, such as the owner of a deal."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..signals import crm_user_created, crm_user_deleted, crm_user_updated
from .base import ResourceQuerySet, ResourceSpec
from .person import Person, PersonFields


class CrmUserQuerySet(ResourceQuerySet["CrmUser"]):
    pass


class CrmUser(Person):
    """A CRM user. Named so beside Django's own users: this one only mirrors the CRM's."""

    objects = CrmUserQuerySet.as_manager()

    class Meta(Person.Meta):
        verbose_name = _("CRM user")
        verbose_name_plural = _("CRM users")


class CrmUserFields(PersonFields):
    email = serializers.EmailField(min_length=5, max_length=250, allow_null=True)


SPEC = ResourceSpec(
    morph_model="genericUser",
    model=CrmUser,
    fields=CrmUserFields,
    signals={"created": crm_user_created, "updated": crm_user_updated, "deleted": crm_user_deleted},
    admin_columns=("first_name", "last_name", "email"),
)
