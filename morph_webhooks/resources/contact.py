"""``genericContact``: a person in the CRM."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..signals import contact_created, contact_deleted, contact_updated
from .base import ResourceQuerySet, ResourceSpec, listed_indexes
from .person import Person, PersonFields


class ContactQuerySet(ResourceQuerySet["Contact"]):
    pass


class Contact(Person):
    phone = models.CharField(_("phone"), max_length=20, blank=True, default="")

    objects = ContactQuerySet.as_manager()

    class Meta(Person.Meta):
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        indexes = listed_indexes("morph_contact")


class ContactFields(PersonFields):
    # Morph's schema bounds a contact's email by length only (a user's must be a valid address).
    email = serializers.CharField(min_length=5, max_length=250, allow_null=True, trim_whitespace=False)
    phone = serializers.CharField(min_length=5, max_length=20, allow_null=True, trim_whitespace=False)


SPEC = ResourceSpec(
    morph_model="genericContact",
    model=Contact,
    fields=ContactFields,
    signals={"created": contact_created, "updated": contact_updated, "deleted": contact_deleted},
    admin_columns=("first_name", "last_name", "email", "phone"),
)
