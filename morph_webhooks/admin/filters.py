"""The filter by connection that every list of tenants' rows shares."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.db.models import Count, Model, Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..models import Connection
from .display import connection_text

# The most connections offered as links; with more, the filter takes the connector and owner typed.
CONNECTION_CHOICES = 20
# The query string's names of a connection, as every link to a filtered list spells them.
CONNECTION_PARAMETERS = ("connector_id", "owner_id")


def with_counts(
    spec: admin.ListFilter, changelist: ChangeList, choices: list[tuple[str, dict[str, str]]]
) -> list[str]:
    """The choices' labels, each with how many rows it would list when the admin's "Show counts"
    is on (one query for all of them, as Django's own filters count)."""
    if not changelist.add_facets or not choices:
        return [label for label, _lookup in choices]
    rows = changelist.get_queryset(spec.request, exclude_parameters=spec.expected_parameters())
    counts = rows.aggregate(
        **{f"choice_{i}": Count("pk", filter=Q(**lookup)) for i, (_label, lookup) in enumerate(choices)}
    )
    return [f"{label} ({counts[f'choice_{i}']})" for i, (label, _lookup) in enumerate(choices)]


def chosen_connection(request: HttpRequest) -> dict[str, str]:
    """The connector and owner the list is filtered on, either or both."""
    return {name: request.GET[name] for name in CONNECTION_PARAMETERS if request.GET.get(name)}


class ConnectionFilter(admin.ListFilter):
    """Filters on a connection's connector and owner (``?connector_id=...&owner_id=...``).

    A few connections are offered as links; with more, a small form takes the two ids, as the
    search box takes a query: a sidebar of thousands of links, or a SELECT DISTINCT over the rows
    listed, would grow with the tenants. Either way the choices cost one bounded query."""

    title = _("connection")
    template = "morph_webhooks/admin/connection_filter.html"

    def __init__(
        self, request: HttpRequest, params: dict[str, list[str]], model: type[Model], model_admin: Any
    ) -> None:
        super().__init__(request, params, model, model_admin)
        for name in CONNECTION_PARAMETERS:
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1]
        # One more than offered, to tell whether there are more.
        self.connections = list(
            Connection.objects.order_by(*CONNECTION_PARAMETERS).values_list(*CONNECTION_PARAMETERS)[
                : CONNECTION_CHOICES + 1
            ]
        )
        # The query string's other parameters, kept by the form.
        self.kept: list[tuple[str, str]] = []

    @property
    def offers_links(self) -> bool:
        return len(self.connections) <= CONNECTION_CHOICES

    @property
    def connector_id(self) -> str:
        return str(self.used_parameters.get("connector_id", ""))

    @property
    def owner_id(self) -> str:
        return str(self.used_parameters.get("owner_id", ""))

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(CONNECTION_PARAMETERS)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        chosen = {name: value for name, value in self.used_parameters.items() if value}
        return queryset.filter(**chosen) if chosen else None

    def choices(self, changelist: ChangeList) -> Any:
        self.kept = [
            (name, value)
            for name, value in changelist.params.items()
            if name not in (*CONNECTION_PARAMETERS, PAGE_VAR)
        ]
        yield {
            "selected": not any(self.used_parameters.values()),
            "query_string": changelist.get_query_string(remove=list(CONNECTION_PARAMETERS)),
            "display": _("All"),
        }
        if not self.offers_links:
            return
        offered = list(self.connections[:CONNECTION_CHOICES])
        chosen = (self.connector_id, self.owner_id)
        if all(chosen) and chosen not in offered:
            # Filtered on a connection that no applied event registered (a link from the overview).
            offered.append(chosen)
        lookups = [{"connector_id": connector_id, "owner_id": owner_id} for connector_id, owner_id in offered]
        labels = with_counts(
            self,
            changelist,
            [(connection_text(*pair), lookup) for pair, lookup in zip(offered, lookups, strict=True)],
        )
        for pair, lookup, label in zip(offered, lookups, labels, strict=True):
            yield {
                "selected": chosen == pair,
                "query_string": changelist.get_query_string(lookup, remove=[PAGE_VAR]),
                "display": label,
            }
