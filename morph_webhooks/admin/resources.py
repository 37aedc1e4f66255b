"""The admin of the resources mirrored from Morph. What every one of them shows (Morph's ids and
timestamps, the deleted filter, the fields as Morph sent them, the names behind the ids it holds)
is declared once, in ResourceAdmin; a resource's admin names only its own fields."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.views.main import ORDER_VAR
from django.db.models import Field, Model, QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Engagement, MirroredResource, Opportunity, WebhookDelivery
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
from .filters import ConnectionFilter
from .related import (
    NOT_SHOWN,
    SHOWN,
    deals_table,
    engagement_activity,
    in_listed_order,
    named,
    newest_deals,
    newest_engagements,
    referenced_ids,
    stages_table,
    stages_with_deals,
    timeline_table,
)
from .resource_filters import DeletedFilter, StageTypeFilter, reference_filter, related_filter

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

# What a contact's or a CRM user's search looks in; on PostgreSQL each has a trigram index
# (migration 0014) for contacts.
PERSON_SEARCHED = ["first_name", "last_name", "email"]


def shown_as(reference: Reference, *, linked: bool = False) -> str:
    """The admin's name for what shows ``reference``: not the reference's own name, which is the
    model's relation (the admin would show the relation's value, or refuse a many-to-many one).
    A list names a single reference (``stage_named``); a change page links it (``stage_linked``):
    in a list, a column of links would read as busier than the one link that opens the row."""
    if reference.many:
        return f"listed_{reference.name}"
    return f"{reference.name}_linked" if linked else f"{reference.name}_named"


def show_reference(reference: Reference, *, linked: bool) -> Callable[[Any, MirroredResource], Any]:
    @admin.display(description=reference.label, ordering=None if reference.many else reference.column)
    def show(self: ResourceAdmin, obj: MirroredResource) -> Any:
        if reference.many:
            return self.listed(obj, reference)
        return named(
            getattr(obj, reference.name), getattr(obj, reference.column), self.change_url if linked else None
        )

    return show


class ResourceAdmin(ReadOnlyAdmin):
    """A subclass names the resource's own fields in the attributes below; the list's columns,
    filters and search, and the change page's fieldsets, are built from them when it is defined
    (so that Django's admin checks see them), with the Morph ones placed the same for every
    resource."""

    # The list's columns, before its connection, update time and deleted mark. A reference's name
    # shows the referenced resource's name.
    columns: ClassVar[Sequence[str]] = ()
    # The list's filters, between the connection and deleted ones; a reference's name filters on
    # its column, a filter class filters as it says.
    filters: ClassVar[Sequence[str | type[admin.ListFilter]]] = ()
    # Searched besides the Morph id.
    searched: ClassVar[Sequence[str]] = ()
    # The change page's first group.
    resource_fields: ClassVar[Sequence[str]] = ()
    # Further groups, (title, fields), shown before Morph's ids: what the resource relates to is
    # what a reader of the CRM's records looks for next.
    more_fieldsets: ClassVar[Sequence[tuple[StrOrPromise, Sequence[str]]]] = ()
    # The columns naming other mirrored resources (the spec's), each read through the model's
    # relation of the same name. A reference not among the filters can still filter the list on
    # one referenced row (?contacts=<its pk>), as the referenced row's page links to it.
    references: ClassVar[Sequence[Reference]] = ()
    # The column a list of the rows related to another row is ordered by, newest first, as that
    # row's page lists them; by the latest update when None.
    newest_by: ClassVar[str | None] = None

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
            for linked in (False, True):
                setattr(cls, shown_as(reference, linked=linked), show_reference(reference, linked=linked))
        cls.list_display = [*cls.columns, "connection", "updated", "deleted"]
        cls.list_filter = [
            ConnectionFilter,
            *(reference_filter(by_name[name]) if name in by_name else name for name in cls.filters),
            DeletedFilter,
            *(
                related_filter(r.name, REGISTRY[r.morph_model].model, r.label)
                for r in cls.references
                if r.name not in cls.filters
            ),
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
            *more_fieldsets,
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
            (_("As Morph sent it"), {"fields": ["extra_fields_json", "warnings_json", "raw_resource_json"]}),
            (_("Local copy"), {"fields": ["copied", "last_written"]}),
        ]

    @staticmethod
    def model_label(name: str) -> str:
        return name.replace("_", " ")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # A page's referenced rows in its own query, whatever its length (None where a row has not
        # arrived).
        single = [reference.name for reference in self.references if not reference.many]
        rows = super().get_queryset(request)
        return rows.select_related(*single) if single else rows

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

    def change_url(self, obj: Model) -> str | None:
        opts = obj._meta
        try:
            return reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        except NoReverseMatch:  # not registered on this site
            return None

    def changelist_url(self, model: type[Model], query: dict[str, Any]) -> str | None:
        opts = model._meta
        try:
            url = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist")
        except NoReverseMatch:
            return None
        return f"{url}?{urlencode(query)}"

    def all_related_url(self, obj: MirroredResource, accessor: str) -> str | None:
        """The list of all the rows ``obj.<accessor>`` reaches: filtered by the referenced row's
        Morph id in its connection where that list offers a filter by it (a stage's deals), by
        the row otherwise (a contact's deals)."""
        relation = obj._meta.get_field(accessor).remote_field
        assert isinstance(relation, Field)
        other = self.admin_site._registry.get(relation.model)
        query: dict[str, Any] = {relation.name: obj.pk}
        if isinstance(other, ResourceAdmin) and relation.name in other.filters:
            [reference] = [r for r in other.references if r.name == relation.name]
            query = {
                reference.column: obj.remote_id,
                "connector_id": obj.connector_id,
                "owner_id": obj.owner_id,
            }
        if isinstance(other, ResourceAdmin) and other.newest_by:
            # The admin's ordering parameter: the column's position in the list, "-" for descending.
            query[ORDER_VAR] = f"-{list(other.list_display).index(other.newest_by)}"
        return self.changelist_url(relation.model, query)

    def listed(self, obj: MirroredResource, reference: Reference) -> SafeString | str:
        """The rows a Morph list names, read through the relation: those shown, in one query."""
        ids = referenced_ids(obj, reference.column)
        shown = ids[:SHOWN]
        rows = getattr(obj, reference.name).defer(*NOT_SHOWN).filter(remote_id__in=shown) if shown else []
        return in_listed_order(ids, rows, self.change_url)

    @staticmethod
    def related(obj: MirroredResource, accessor: str) -> QuerySet[Any]:
        # By name: each model has its own relations, declared where it is.
        return getattr(obj, accessor).all()  # type: ignore[no-any-return]

    @admin.display(description=_("opportunities"))
    def deals(self, obj: MirroredResource) -> SafeString:
        rows = newest_deals(self.related(obj, "opportunities"))
        return deals_table(rows, self.change_url, self.all_related_url(obj, "opportunities"))

    @admin.display(description=_("stages"))
    def stages_in_order(self, obj: MirroredResource) -> SafeString:
        listed = referenced_ids(obj, "stage_ids")
        rows = stages_with_deals(self.related(obj, "stages"), listed)
        return stages_table(rows, listed, self.change_url, self.all_related_url(obj, "stages"))

    @admin.display(description=_("engagements"))
    def timeline(self, obj: MirroredResource) -> SafeString:
        rows = newest_engagements(self.related(obj, "engagements"))
        return timeline_table(rows, self.change_url, self.all_related_url(obj, "engagements"))

    @admin.display(description=_("engagements owned"))
    def owned_timeline(self, obj: MirroredResource) -> SafeString:
        rows = newest_engagements(self.related(obj, "owned_engagements"))
        return timeline_table(rows, self.change_url, self.all_related_url(obj, "owned_engagements"))

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
    filters = ["stage", StageTypeFilter, "pipeline"]
    searched = ["name"]
    resource_fields = ["name", "amount_with_currency", "stage_linked", "pipeline_linked", "crm_owner_linked"]
    more_fieldsets = [(_("Related records"), ["listed_contacts", "listed_companies", "timeline"])]
    references = REGISTRY["crmOpportunity"].references

    @admin.display(description=_("stage"), ordering="stage_id")
    def stage_in_pipeline(self, obj: Opportunity) -> SafeString | str:
        stage = named(obj.stage, obj.stage_id, None)
        if not obj.pipeline_id:
            return stage
        return format_html(
            '{}<br><span class="quiet">{}</span>', stage, named(obj.pipeline, obj.pipeline_id, None)
        )

    @admin.display(description=_("amount"), ordering="amount")
    def amount_with_currency(self, obj: Opportunity) -> str:
        return EMPTY if obj.amount is None else amount_text(obj.amount, obj.currency)


class EngagementAdmin(ResourceAdmin):
    # Direction and status under the type: fewer columns keep the list within a laptop's width
    # with the navigation sidebar open. No filter by owner: a CRM has too many users for links.
    columns = ["title", "activity", "started", "crm_owner_named"]
    filters = ["type", "status", "direction"]
    searched = ["title"]
    newest_by = "started"
    resource_fields = [
        "type",
        "title",
        "description",
        "status",
        "direction",
        "started",
        "ended",
        "duration",
        "crm_owner_linked",
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
        return engagement_activity(obj)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: Engagement) -> str:
        return moment(obj.started_at) or EMPTY

    @admin.display(description=_("ended"))
    def ended(self, obj: Engagement) -> str:
        return moment(obj.ended_at) or EMPTY


# The rows of other models that a resource's page lists, by the methods listing them: those
# referring to it (a contact's deals and engagements, a stage's deals).
RELATED_LISTS: dict[str, list[str]] = {
    "genericContact": ["deals", "timeline"],
    "genericCompany": ["deals", "timeline"],
    "crmStage": ["deals"],
    "crmPipeline": ["stages_in_order", "deals"],
    "genericUser": ["deals", "owned_timeline"],
}
# The fields a related list shows better, left out where it is shown: a pipeline's stages, read
# through the relation in the order Morph lists them, with their deals, instead of that list.
SHOWN_INSTEAD = {"stages_in_order": "listed_stages"}


def resource_admin(spec: ResourceSpec) -> type[ResourceAdmin]:
    """The admin of a mirrored model that needs nothing of its own: its spec's columns in the
    list (a reference by the name of what it refers to), searched by the first of them too (a
    person by names and email), filtered by its references, its own fields on the change page
    (references linked), and the rows of other models that refer to it."""
    shared = {field.name for field in MirroredResource._meta.get_fields()} | {"id"}
    own = [
        field.name
        for field in spec.model._meta.concrete_fields
        if field.name not in shared and not isinstance(field, Ref)
    ]
    names = {reference.column: shown_as(reference) for reference in spec.references}
    links = {reference.column: shown_as(reference, linked=True) for reference in spec.references}
    related = RELATED_LISTS.get(spec.morph_model, [])
    replaced = {SHOWN_INSTEAD[name] for name in related if name in SHOWN_INSTEAD}
    attributes = {
        "columns": [names.get(column, column) for column in spec.admin_columns],
        # A person is looked for by either name or the email address.
        "searched": PERSON_SEARCHED if issubclass(spec.model, Person) else list(spec.admin_columns[:1]),
        "filters": [reference.name for reference in spec.references if not reference.many],
        "resource_fields": [links.get(c, c) for c in own if links.get(c, c) not in replaced],
        "more_fieldsets": [(_("Related records"), related)] if related else [],
        "references": spec.references,
        "__module__": __name__,
    }
    return type(f"{spec.model.__name__}Admin", (ResourceAdmin,), attributes)
