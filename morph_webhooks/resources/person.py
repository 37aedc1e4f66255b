"""What Morph's people have in common: a CRM user and a contact are both a first and last name
and an email address."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from .base import MirroredResource
from .fields import ResourceFields


class Person(MirroredResource):
    first_name = models.CharField(_("first name"), max_length=250, blank=True, default="")
    last_name = models.CharField(_("last name"), max_length=250, blank=True, default="")
    email = models.CharField(_("email"), max_length=250, blank=True, default="")

    class Meta(MirroredResource.Meta):
        abstract = True

    def __str__(self) -> str:
        return " ".join(filter(None, [self.first_name, self.last_name])) or self.email or self.remote_id


class PersonFields(ResourceFields):
    firstName = serializers.CharField(
        source="first_name", min_length=1, max_length=250, allow_null=True, trim_whitespace=False
    )
    lastName = serializers.CharField(
        source="last_name", min_length=1, max_length=250, allow_null=True, trim_whitespace=False
    )
