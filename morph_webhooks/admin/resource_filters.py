"""The filters of the mirrored resources' lists, besides the connection's: deleted or not, by a
referenced resource (its Morph id within a connection), by the type of a deal's stage, and by one
related row, which a change page links to for the rows it does not list itself."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..models import MirroredResource, ResourceQuerySet, StageType
from ..resources.base import Reference
from ..resources.registry import REGISTRY
from .display import connection_text
from .filters import chosen_connection, with_counts
from .related import label_of

# The most choices a filter by a referenced resource offers: a CRM has a few dozen stages, and a
# filter is no place for thousands.
FILTER_CHOICES = 100


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


class StageTypeFilter(admin.SimpleListFilter):
    """Deals by their stage's type (open, won, lost), through the relation: the stage of each
    deal's own connection decides."""

    title = _("stage type")
    parameter_name = "stage__type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, Any]]:
        return list(StageType.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        return queryset.filter(stage__type=value) if value else None


class ReferenceFilter(admin.SimpleListFilter):
    """Filters on a reference column (``?stage_id=...``), its choices named from the referenced
    model's table rather than a SELECT DISTINCT over the rows listed. A Morph id means something
    within its connection only: when several connections are offered, each choice says whose it
    is and filters on that connection too; once the list is filtered on a connection, only that
    connection's are offered.

    On the column rather than through the relation: a link may name an id whose resource has not
    arrived yet, and the list filtered on it still shows the rows naming it."""

    reference: ClassVar[Reference]

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, Any]]:
        model = REGISTRY[self.reference.morph_model].model
        resources = model._default_manager.filter(deleted_at__isnull=True, **chosen_connection(request))
        found = list(resources.order_by("remote_id", "connector_id", "owner_id")[:FILTER_CHOICES])
        several = len({(resource.connector_id, resource.owner_id) for resource in found}) > 1
        # (remote id, its connection's lookup, label); no connection: the id in any connection.
        self.offered: list[tuple[str, dict[str, str], str]] = sorted(
            (
                (
                    resource.remote_id,
                    {"connector_id": resource.connector_id, "owner_id": resource.owner_id},
                    f"{label_of(resource)} · {connection_text(resource.connector_id, resource.owner_id)}"
                    if several
                    else label_of(resource),
                )
                for resource in found
            ),
            key=lambda choice: (choice[2].casefold(), choice[2]),
        )
        chosen = self.value()
        if chosen and chosen not in {remote_id for remote_id, _whose, _label in self.offered}:
            # Filtered on an id whose resource has not arrived (a link from the overview): say so.
            self.offered.append((chosen, {}, chosen))
        return [(remote_id, label) for remote_id, _whose, label in self.offered]

    def has_output(self) -> bool:
        # The admin applies only the filters it shows: a filter with a value must show.
        return super().has_output() or self.value() is not None

    def choices(self, changelist: ChangeList) -> Any:
        connection = chosen_connection(self.request)
        parameter = str(self.parameter_name)
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[parameter]),
            "display": _("All"),
        }
        labels = with_counts(
            self,
            changelist,
            [(label, {parameter: remote_id, **whose}) for remote_id, whose, label in self.offered],
        )
        for (remote_id, whose, _label), label in zip(self.offered, labels, strict=True):
            yield {
                "selected": self.value() == remote_id
                and all(connection.get(name, value) == value for name, value in whose.items()),
                "query_string": changelist.get_query_string({parameter: remote_id, **whose}),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        return queryset.filter(**{self.reference.column: value}) if value else None


def reference_filter(reference: Reference) -> type[ReferenceFilter]:
    attributes = {
        "reference": reference,
        "title": reference.label,
        "parameter_name": reference.column,
        "__module__": __name__,
    }
    return type(f"{reference.name.title().replace('_', '')}Filter", (ReferenceFilter,), attributes)


class RelatedFilter(admin.SimpleListFilter):
    """The rows related to one row of another model (``?contacts=<its pk>``: a contact's deals),
    through the relation, which stays within the row's connection. Offered by no link of its own:
    shown only once a change page's "all of them" link has chosen it, named by the row chosen."""

    relation: ClassVar[str]
    model: ClassVar[type[Model]]

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, Any]]:
        value = self.value()
        if not value or not value.isdigit():
            return []
        row = self.model._default_manager.filter(pk=value).first()
        return [(value, label_of(row) if isinstance(row, MirroredResource) else value)]

    def has_output(self) -> bool:
        return self.value() is not None

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value is None:
            return None
        # A pk that is no number matches nothing rather than failing the page.
        return queryset.filter(**{f"{self.relation}__pk": value}) if value.isdigit() else queryset.none()


def related_filter(relation: str, model: type[Model], label: Any) -> type[RelatedFilter]:
    attributes = {
        "relation": relation,
        "model": model,
        "title": label,
        "parameter_name": relation,
        "__module__": __name__,
    }
    return type(f"{relation.title().replace('_', '')}RowFilter", (RelatedFilter,), attributes)
