"""``genericCompany``: a company (an account) in the CRM."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..signals import company_created, company_deleted, company_updated
from .base import MirroredResource, ResourceQuerySet, ResourceSpec, listed_indexes
from .fields import ResourceFields


class CompanyQuerySet(ResourceQuerySet["Company"]):
    pass


class Company(MirroredResource):
    name = models.CharField(_("name"), max_length=250, blank=True, default="")

    objects = CompanyQuerySet.as_manager()

    class Meta(MirroredResource.Meta):
        verbose_name = _("company")
        verbose_name_plural = _("companies")
        indexes = listed_indexes("morph_company")


class CompanyFields(ResourceFields):
    name = serializers.CharField(min_length=1, max_length=250, allow_null=True, trim_whitespace=False)


SPEC = ResourceSpec(
    morph_model="genericCompany",
    model=Company,
    fields=CompanyFields,
    signals={"created": company_created, "updated": company_updated, "deleted": company_deleted},
    admin_columns=("name",),
)
