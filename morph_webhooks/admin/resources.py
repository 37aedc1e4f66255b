"""The admin of the resources mirrored from Morph. What every one of them shows (Morph's ids and
timestamps, the deleted filter, the fields as Morph sent them, the names behind the ids it holds)
is declared once, in ResourceAdmin; a resource's admin names only its own fields."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Engagement, MirroredResource, Opportunity, ResourceQuerySet, WebhookDelivery
from ..resources.base import Reference, ResourceSpec
from ..resources.person import Person
from ..resources.registry import REGISTRY
from ..resources.relations import Ref
from .display import (
    EMPTY,
    ReadOnlyAdmin,
    amount_text,
    connection_text,
    deleted_mark,
    field_as,
    moment,
    pretty_json,
)
from .filters import ConnectionFilter, chosen_connection, with_counts
from .related import label_of, load_related, referenced_ids, related_of

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

# What a contact's or a CRM user's search looks in; on PostgreSQL each has a trigram index
# (migration 0014) for contacts.
PERSON_SEARCHED = ["first_name", "last_name", "email"]

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


class ReferenceFilter(admin.SimpleListFilter):
    """Filters on a reference column (``?stage_id=...``), its choices named from the referenced
    model's table rather than a SELECT DISTINCT over the rows listed. A Morph id means something
    within its connection only: when several connections are offered, each choice says whose it
    is and filters on that connection too; once the list is filtered on a connection, only that
    connection's are offered."""

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


class ResourceChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # The names behind the ids the list shows, for the whole page at once.
        assert isinstance(self.model_admin, ResourceAdmin)
        listed = self.model_admin.listed_references
        shown = [r for r in self.model_admin.references if r.name in listed]
        load_related(list(self.result_list), shown, link=False)


def shown_as(reference: Reference) -> str:
    """The admin's name for what shows ``reference``: not the reference's own name, which is the
    model's relation (the admin would show the relation's value, a query per row, or refuse a
    many-to-many one)."""
    return f"listed_{reference.name}" if reference.many else f"{reference.name}_named"


def show_reference(reference: Reference) -> Callable[[Any, MirroredResource], Any]:
    @admin.display(description=reference.label, ordering=None if reference.many else reference.column)
    def show(self: ResourceAdmin, obj: MirroredResource) -> Any:
        return self.referenced(obj, reference)

    return show


class ResourceAdmin(ReadOnlyAdmin):
    """A subclass names the resource's own fields in the attributes below; the list's columns,
    filters and search, and the change page's fieldsets, are built from them when it is defined
    (so that Django's admin checks see them), with the Morph ones placed the same for every
    resource."""

    # The list's columns, before its connection, update time and deleted mark. A reference's name
    # shows the referenced resource's name.
    columns: ClassVar[Sequence[str]] = ()
    # The list's filters, between the connection and deleted ones; a reference's name filters on it.
    filters: ClassVar[Sequence[str]] = ()
    # Searched besides the Morph id.
    searched: ClassVar[Sequence[str]] = ()
    # The change page's first group.
    resource_fields: ClassVar[Sequence[str]] = ()
    # Further groups of the resource's own fields, (title, fields), shown after its Morph ids.
    more_fieldsets: ClassVar[Sequence[tuple[StrOrPromise, Sequence[str]]]] = ()
    # The columns naming other mirrored resources (the spec's).
    references: ClassVar[Sequence[Reference]] = ()
    # The references the list names, loaded for its page: those among its columns unless a
    # subclass shows more within another column.
    listed_references: ClassVar[Sequence[str]] = ()

    ordering = ["-remote_updated_at"]
    change_form_template = "morph_webhooks/admin/resource_change_form.html"

    morph_id = field_as("remote_id", _("Morph id"))
    connector = field_as("connector_id", _("connector"))
    connection_owner = field_as("owner_id", _("owner (tenant)"))
    created_in_crm = field_as("remote_created_at", _("created in the CRM"))
    updated_in_crm = field_as("remote_updated_at", _("updated in the CRM"))
    # The list's header, kept short: a header does not wrap, and the list must fit 1400 px.
    updated = field_as("remote_updated_at", _("updated"))
    copied = field_as("created_at", _("first stored"))
    last_written = field_as("updated_at", _("last written"))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        by_name = {reference.name: reference for reference in cls.references}
        for reference in cls.references:
            setattr(cls, shown_as(reference), show_reference(reference))
        if "listed_references" not in cls.__dict__:
            cls.listed_references = [r.name for r in cls.references if shown_as(r) in cls.columns]
        cls.list_display = [*cls.columns, "connection", "updated", "deleted"]
        cls.list_filter = [
            ConnectionFilter,
            *(reference_filter(by_name[name]) if name in by_name else name for name in cls.filters),
            DeletedFilter,
        ]
        # Morph ids are matched exactly: "=" would compare case-insensitively, which no index serves.
        cls.search_fields = [*cls.searched, "remote_id__exact"]
        searched = ", ".join(str(cls.model_label(name)) for name in cls.searched)
        cls.search_help_text = (
            _("%(fields)s containing the words searched, or a Morph id matched exactly (case matters).")
            % {"fields": searched.capitalize()}
            if searched
            else _("A Morph id, matched exactly (case matters).")
        )
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
                        "connector",
                        "connection_owner",
                        "morph_id",
                        "created_in_crm",
                        "updated_in_crm",
                        "deleted_when",
                        "deliveries",
                    ]
                },
            ),
            *more_fieldsets,
            (_("As Morph sent it"), {"fields": ["extra_fields_json", "warnings_json", "raw_resource_json"]}),
            (_("Local copy"), {"fields": ["copied", "last_written"]}),
        ]

    @staticmethod
    def model_label(name: str) -> str:
        return name.replace("_", " ")

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ResourceChangeList

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if isinstance(obj, MirroredResource) and obj.deleted_at is not None:
            context["deleted_at"] = moment(obj.deleted_at)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if isinstance(obj, MirroredResource):
            load_related([obj], self.references)
        return obj

    def change_url(self, obj: Model) -> str | None:
        opts = obj._meta
        try:
            return reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        except NoReverseMatch:  # not registered on this site
            return None

    def referenced(self, obj: MirroredResource, reference: Reference) -> SafeString | str:
        """The referenced resources' names, linked to them; an id whose resource has not arrived
        yet is shown as it is."""
        related = related_of(obj, self.references)
        shown: list[tuple[str | None, str]] = []
        for remote_id in referenced_ids(obj, reference):
            resource = related.get(obj, reference, remote_id)
            if resource is None:
                shown.append((None, remote_id))
            else:
                shown.append((self.change_url(resource) if related.link else None, label_of(resource)))
        if not shown:
            return EMPTY
        return format_html_join(
            ", ",
            "{}",
            ((format_html('<a href="{}">{}</a>', url, text) if url else text,) for url, text in shown),
        )

    @admin.display(description=_("connection"), ordering="connector_id")
    def connection(self, obj: MirroredResource) -> str:
        return connection_text(obj.connector_id, obj.owner_id)

    @admin.display(description=_("deleted"), ordering="deleted_at")
    def deleted(self, obj: MirroredResource) -> SafeString | str:
        return deleted_mark(obj.deleted_at)

    @admin.display(description=_("deleted"))
    def deleted_when(self, obj: MirroredResource) -> SafeString | str:
        return deleted_mark(obj.deleted_at, when=True)

    @admin.display(description=_("deliveries"))
    def deliveries(self, obj: MirroredResource) -> SafeString | str:
        """The request log's entries for this resource."""
        opts = WebhookDelivery._meta
        try:
            url = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist")
        except NoReverseMatch:
            return EMPTY
        query = urlencode(
            {"remote_id": obj.remote_id, "connector_id": obj.connector_id, "owner_id": obj.owner_id}
        )
        return format_html('<a href="{}?{}">{}</a>', url, query, _("Deliveries of this resource"))

    @admin.display(description=_("extra fields"))
    def extra_fields_json(self, obj: MirroredResource) -> SafeString | str:
        return pretty_json(obj.extra_fields) if obj.extra_fields else EMPTY

    @admin.display(description=_("warnings"))
    def warnings_json(self, obj: MirroredResource) -> SafeString | str:
        return pretty_json(obj.warnings) if obj.warnings else EMPTY

    @admin.display(description=_("raw resource"))
    def raw_resource_json(self, obj: MirroredResource) -> SafeString | str:
        return EMPTY if obj.raw_resource is None else pretty_json(obj.raw_resource)


class OpportunityAdmin(ResourceAdmin):
    # The pipeline under the stage, which belongs to it: one column less keeps the list within a
    # laptop's width with the navigation sidebar open.
    columns = ["name", "amount_with_currency", "stage_in_pipeline", "crm_owner_named"]
    listed_references = ["stage", "pipeline", "crm_owner"]
    filters = ["stage", "pipeline"]
    searched = ["name"]
    resource_fields = ["name", "amount_with_currency", "stage_named", "pipeline_named", "crm_owner_named"]
    more_fieldsets = [(_("Related records"), ["listed_contacts", "listed_companies", "listed_engagements"])]
    references = REGISTRY["crmOpportunity"].references

    @admin.display(description=_("stage"), ordering="stage_id")
    def stage_in_pipeline(self, obj: Opportunity) -> SafeString | str:
        by_name = {reference.name: reference for reference in self.references}
        stage = self.referenced(obj, by_name["stage"])
        pipeline = self.referenced(obj, by_name["pipeline"])
        if pipeline == EMPTY:
            return stage
        return format_html('{}<br><span class="quiet">{}</span>', stage, pipeline)

    @admin.display(description=_("engagements"))
    def listed_engagements(self, obj: Opportunity) -> str:
        # Their ids, as the opportunity lists them.
        return ", ".join(str(remote_id) for remote_id in obj.engagement_ids or []) or EMPTY

    @admin.display(description=_("amount"), ordering="amount")
    def amount_with_currency(self, obj: Opportunity) -> str:
        return EMPTY if obj.amount is None else amount_text(obj.amount, obj.currency)


class EngagementAdmin(ResourceAdmin):
    # Direction and status under the type: fewer columns keep the list within a laptop's width
    # with the navigation sidebar open. No filter by owner: a CRM has too many users for links.
    columns = ["title", "activity", "started", "crm_owner_named"]
    filters = ["type", "status", "direction"]
    searched = ["title"]
    resource_fields = [
        "type",
        "title",
        "description",
        "status",
        "direction",
        "started_at",
        "ended_at",
        "duration",
        "crm_owner_named",
    ]
    more_fieldsets = [
        (
            _("Related records"),
            ["listed_users", "listed_companies", "listed_contacts", "listed_opportunities"],
        )
    ]
    references = REGISTRY["crmEngagement"].references

    @admin.display(description=_("type"), ordering="type")
    def activity(self, obj: Engagement) -> SafeString | str:
        details = " · ".join(
            str(label) for label in (obj.get_direction_display(), obj.get_status_display()) if label
        )
        kind = obj.get_type_display() or EMPTY
        return format_html('{}<br><span class="quiet">{}</span>', kind, details) if details else kind

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: Engagement) -> str:
        return moment(obj.started_at) or EMPTY


def resource_admin(spec: ResourceSpec) -> type[ResourceAdmin]:
    """The admin of a mirrored model that needs nothing of its own: its spec's columns in the
    list (a reference by the name of what it refers to), searched by the first of them too (a
    person by names and email), filtered
    by its references, and its own fields on the change page."""
    shared = {field.name for field in MirroredResource._meta.get_fields()} | {"id"}
    own = [
        field.name
        for field in spec.model._meta.concrete_fields
        if field.name not in shared and not isinstance(field, Ref)
    ]
    names = {reference.column: shown_as(reference) for reference in spec.references}
    attributes = {
        "columns": [names.get(column, column) for column in spec.admin_columns],
        # A person is looked for by either name or the email address.
        "searched": PERSON_SEARCHED if issubclass(spec.model, Person) else list(spec.admin_columns[:1]),
        "filters": [reference.name for reference in spec.references if not reference.many],
        "resource_fields": [names.get(column, column) for column in own],
        "references": spec.references,
        "__module__": __name__,
    }
    return type(f"{spec.model.__name__}Admin", (ResourceAdmin,), attributes)
