"""The admin of the resources mirrored from Morph. What every one of them shows (Morph's ids and
timestamps, the deleted filter, the fields as Morph sent them) is declared once, in ResourceAdmin;
a resource's admin names only its own fields."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import MirroredResource, Opportunity, ResourceQuerySet
from .display import ReadOnlyAdmin, amount_text, pretty_json

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


class DeletedFilter(admin.SimpleListFilter):
    title = _("deleted")
    parameter_name = "deleted"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, Any]]:
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        assert isinstance(queryset, ResourceQuerySet)
        if self.value() == "yes":
            return queryset.deleted()
        if self.value() == "no":
            return queryset.alive()
        return None


class ResourceAdmin(ReadOnlyAdmin):
    """A subclass names the resource's own fields in the attributes below; the list's columns,
    filters and search, and the change page's fieldsets, are built from them when it is defined
    (so that Django's admin checks see them), with the Morph ones placed the same for every
    resource."""

    # The list's columns, before Morph's ids, timestamp and deleted flag.
    columns: ClassVar[Sequence[str]] = ()
    # The list's filters, between the connector and deleted ones.
    filters: ClassVar[Sequence[str]] = ()
    # Searched besides the Morph id.
    searched: ClassVar[Sequence[str]] = ()
    # The change page's first group.
    resource_fields: ClassVar[Sequence[str]] = ()
    # Further groups of the resource's own fields, (title, fields), shown after its Morph ids.
    more_fieldsets: ClassVar[Sequence[tuple[StrOrPromise, Sequence[str]]]] = ()

    ordering = ["-remote_updated_at"]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.list_display = [*cls.columns, "connector_id", "owner_id", "remote_updated_at", "deleted"]
        cls.list_filter = ["connector_id", *cls.filters, DeletedFilter]
        # Morph ids are matched exactly: "=" would compare case-insensitively, which no index serves.
        cls.search_fields = [*cls.searched, "remote_id__exact"]
        # Any: the stubs type a fieldset's options as a TypedDict that a comprehension's dict is not
        # inferred as; Django's admin checks validate the result when the site starts.
        more_fieldsets: list[Any] = [
            (title, {"fields": list(fields)}) for title, fields in cls.more_fieldsets
        ]
        cls.fieldsets = [
            (None, {"fields": list(cls.resource_fields)}),
            (
                _("Morph"),
                {
                    "fields": [
                        "connector_id",
                        "owner_id",
                        "remote_id",
                        "remote_created_at",
                        "remote_updated_at",
                        "deleted_at",
                    ]
                },
            ),
            *more_fieldsets,
            (_("As Morph sent it"), {"fields": ["extra_fields_json", "warnings_json", "raw_resource_json"]}),
            (_("Local copy"), {"fields": ["created_at", "updated_at"]}),
        ]

    @admin.display(description=_("deleted"), boolean=True, ordering="deleted_at")
    def deleted(self, obj: MirroredResource) -> bool:
        return obj.is_deleted

    @admin.display(description=_("extra fields"))
    def extra_fields_json(self, obj: MirroredResource) -> SafeString:
        return pretty_json(obj.extra_fields)

    @admin.display(description=_("warnings"))
    def warnings_json(self, obj: MirroredResource) -> SafeString:
        return pretty_json(obj.warnings)

    @admin.display(description=_("raw resource"))
    def raw_resource_json(self, obj: MirroredResource) -> SafeString | None:
        return None if obj.raw_resource is None else pretty_json(obj.raw_resource)


class OpportunityAdmin(ResourceAdmin):
    columns = ["name", "amount_with_currency", "stage_id", "pipeline_id"]
    filters = ["stage_id", "pipeline_id"]
    searched = ["name"]
    resource_fields = ["name", "amount", "currency", "stage_id", "pipeline_id", "crm_owner_id"]
    more_fieldsets = [(_("Related records"), ["contact_ids", "company_ids", "engagement_ids"])]

    @admin.display(description=_("amount"), ordering="amount")
    def amount_with_currency(self, obj: Opportunity) -> str | None:
        return None if obj.amount is None else amount_text(obj.amount, obj.currency)
