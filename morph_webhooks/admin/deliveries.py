"""The request log of Morph's deliveries, its overview page, and reprocessing."""

from __future__ import annotations

import logging
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import Connection, MirroredResource, Opportunity, Outcome, WebhookDelivery
from ..redaction import redact_headers
from ..reprocess import ALREADY_APPLIED, reprocess_many
from ..resources.registry import REGISTRY
from .display import (
    EMPTY,
    ReadOnlyAdmin,
    connection_text,
    event_text,
    field_as,
    json_or_text,
    pretty_json,
    short_key,
)
from .filters import CONNECTION_CHOICES, CONNECTION_PARAMETERS, ConnectionFilter, chosen_connection
from .overview import (
    OVERVIEW_CONNECTIONS,
    OVERVIEW_FAILURES,
    OVERVIEW_OUTCOMES,
    TROUBLE,
    connection_rows,
    deliveries_per_hour,
    latest_failures,
    no_opportunities,
    opportunities_by_stage,
    outcome_totals,
)

logger = logging.getLogger(__name__)


class HTTPStatusFilter(admin.SimpleListFilter):
    """The statuses the request log can hold, listed without scanning the log for them (a plain
    field filter would run SELECT DISTINCT over every delivery on each page)."""

    title = _("HTTP status")
    parameter_name = "http_status"
    # Answers recorded in the log: applied or queued, invalid, connector or owner refused, too
    # large, not JSON, failed, unavailable. 401 and network refusals are never recorded.
    STATUSES = (200, 400, 403, 411, 413, 415, 500, 503)

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, Any]]:
        return [(str(code), f"{code} {HTTPStatus(code).phrase}") for code in self.STATUSES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value in {str(code) for code in self.STATUSES}:
            return queryset.filter(http_status=int(value))
        return None


class DeliveryChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[WebhookDelivery]:
        # Bodies run up to MAX_BODY_SIZE each; a page of them is not worth loading for one list.
        return super().get_queryset(request, exclude_parameters).defer("body", "raw_body", "headers", "error")


def connection_choice(connections: list[tuple[str, str]], chosen: dict[str, str]) -> dict[str, Any]:
    """The overview's offer to show the opportunities of one of ``connections``."""
    return {
        "show_opportunities": True,
        "opportunity_choices": [
            (connection_text(*pair), "?" + urlencode(dict(zip(CONNECTION_PARAMETERS, pair, strict=True))))
            for pair in connections[:CONNECTION_CHOICES]
        ],
        "opportunity_choices_more": len(connections) > CONNECTION_CHOICES,
        "chosen": chosen,
    }


class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["received", "event_type", "outcome", "resource_id", "connection", "key"]
    list_filter = [ConnectionFilter, "status", HTTPStatusFilter]
    # Both columns are indexed; exact lookups use the indexes, "=" (case-insensitive) would not.
    search_fields = ["idempotency_key__exact", "remote_id__exact"]
    search_help_text = _("An idempotency key or a Morph id, matched exactly (case matters).")
    ordering = ["-received_at"]
    actions = ["reprocess"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "received",
                    "status",
                    "http_status_code",
                    "attempts",
                    "next_attempt",
                    "processed",
                    "reprocessed",
                ]
            },
        ),
        (
            _("Event"),
            {"fields": ["event", "connector", "connection_owner", "idempotency_key", "morph_id", "resource"]},
        ),
        (_("Request"), {"fields": ["client_address", "path", "headers_json", "body_json"]}),
        (_("Error"), {"fields": ["error_text"]}),
    ]

    received = field_as("received_at", _("received"))
    next_attempt = field_as("next_attempt_at", _("next attempt"))
    processed = field_as("processed_at", _("processed"))
    reprocessed = field_as("reprocessed_at", _("reprocessed"))
    http_status_code = field_as("http_status", _("HTTP status"))
    connector = field_as("connector_id", _("connector"))
    connection_owner = field_as("owner_id", _("owner (tenant)"))
    morph_id = field_as("remote_id", _("Morph id"))
    client_address = field_as("remote_addr", _("client address"))

    change_list_template = "morph_webhooks/admin/webhookdelivery_change_list.html"
    overview_template = "morph_webhooks/admin/overview.html"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return DeliveryChangeList

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        overview = path(
            "overview/",
            self.admin_site.admin_view(self.overview_view),
            name="{}_{}_overview".format(*info),
        )
        # Before the inherited patterns: their "<path:object_id>/" would take "overview/" as a pk.
        return [overview, *super().get_urls()]

    def overview_view(self, request: HttpRequest) -> TemplateResponse:
        """Deliveries per hour and outcome over the last day, the latest failures, and the
        opportunities per stage, open apart from won and lost. A fixed number of queries, however
        much data there is."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name
        now = timezone.now()
        rows = deliveries_per_hour(now)
        connections = self.connection_context(request, now)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Webhook overview"),
            "opts": self.opts,
            "outcomes": [(outcome.value, outcome.label) for outcome in OVERVIEW_OUTCOMES],
            "hours": rows,
            "hours_total": sum(row.total for row in rows),
            "outcome_totals": outcome_totals(rows),
            "trouble": TROUBLE,
            "failures": latest_failures(self.delivery_url),
            "failure_limit": OVERVIEW_FAILURES,
            **connections,
            # Whole-percent widths as classes rather than style attributes, which a Content
            # Security Policy without 'unsafe-inline' would drop.
            "bar_widths": range(1, 101),
            **self.opportunity_context(request, connections["known"]),
        }
        return TemplateResponse(request, self.overview_template, context)

    def delivery_url(self, delivery: WebhookDelivery) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[delivery.pk],
            current_app=self.admin_site.name,
        )

    def connection_context(self, request: HttpRequest, now: datetime) -> dict[str, Any]:
        """Each connection's last event, failures and silence, those that need a look first."""
        deliveries = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist", current_app=self.admin_site.name
        )
        rows = connection_rows(now, deliveries)
        return {
            "connections": rows[:OVERVIEW_CONNECTIONS],
            "connections_total": len(rows),
            "connections_silent": sum(row.silent for row in rows),
            "connections_failing": sum(bool(row.failures) for row in rows),
            "connections_more": max(len(rows) - OVERVIEW_CONNECTIONS, 0),
            "all_connections_url": self.changelist_url(request, Connection),
            # Those an applied event registered: the ones that can hold opportunities.
            "known": sorted((row.connector_id, row.owner_id) for row in rows if row.registered),
            "now": now,
        }

    def changelist_url(self, request: HttpRequest, model: type[Model]) -> str | None:
        """The list of ``model`` in this admin site, for a user allowed to see it; else None."""
        if not self.admin_site.is_registered(model):
            return None
        if not self.admin_site.get_model_admin(model).has_view_permission(request):
            return None
        return reverse(
            f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist",
            current_app=self.admin_site.name,
        )

    def opportunity_context(self, request: HttpRequest, known: list[tuple[str, str]]) -> dict[str, Any]:
        """One connection's opportunities by stage, for those allowed to see opportunities: seeing
        the request log does not imply seeing the pipeline's amounts. Two tenants' amounts are
        never added up: with several connections the page offers to choose one (``?connector_id=
        ...&owner_id=...``), ``known`` being the connections it knows without a query."""
        changelist = self.changelist_url(request, Opportunity)
        if changelist is None:
            return {"show_opportunities": False}
        chosen = chosen_connection(request)
        if not chosen and len(known) > 1:
            return connection_choice(known, chosen)
        by_connection = opportunities_by_stage(changelist, chosen)
        if len(by_connection) > 1:
            # A connector alone was chosen, or opportunities of connections not registered.
            return connection_choice(sorted(by_connection), chosen)
        pair: tuple[str, str] | None
        if by_connection:
            [(pair, sections)] = by_connection.items()
        else:
            # None at all: the page still says whose, the connection chosen or the one known.
            if len(chosen) == len(CONNECTION_PARAMETERS):
                pair = (chosen["connector_id"], chosen["owner_id"])
            else:
                pair = known[0] if known and not chosen else None
            sections = no_opportunities(changelist)
        return {
            "show_opportunities": True,
            "opportunity_connection": pair,
            "opportunity_sections": sections,
            # The open ones, always shown; won and lost only when there are some.
            "stages": sections[0].stages,
            "currency_totals": sections[0].currency_totals,
            "chosen": chosen,
        }

    @admin.display(description=_("event"), ordering="event")
    def event_type(self, obj: WebhookDelivery) -> SafeString | str:
        return event_text(obj.event)

    @admin.display(description=_("status"), ordering="status")
    def outcome(self, obj: WebhookDelivery) -> str:
        # As the overview writes it: what became of it, and what Morph was answered.
        return f"{capfirst(obj.get_status_display())} ({obj.http_status})"

    @admin.display(description=_("connection"), ordering="connector_id")
    def connection(self, obj: WebhookDelivery) -> str:
        return connection_text(obj.connector_id, obj.owner_id)

    @admin.display(description=_("idempotency key"), ordering="idempotency_key")
    def key(self, obj: WebhookDelivery) -> SafeString | str:
        return short_key(obj.idempotency_key)

    @admin.display(description=_("Morph id"), ordering="remote_id")
    def resource_id(self, obj: WebhookDelivery) -> SafeString | str:
        """The Morph id, linked to the list of the resources of its model holding it in this
        delivery's connection: the row it changed, without a query per delivery."""
        model = self.resource_model(obj)
        if not obj.remote_id:
            return EMPTY
        if model is None:
            return obj.remote_id
        opts = model._meta
        try:
            url = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist")
        except NoReverseMatch:
            return obj.remote_id
        query = urlencode(
            {"remote_id": obj.remote_id, "connector_id": obj.connector_id, "owner_id": obj.owner_id}
        )
        return format_html('<a href="{}?{}">{}</a>', url, query, obj.remote_id)

    @admin.display(description=_("resource"))
    def resource(self, obj: WebhookDelivery) -> SafeString | str:
        """The row the delivery's event created, changed or deleted, if it is stored."""
        model = self.resource_model(obj)
        if model is None or not obj.remote_id:
            return EMPTY
        row = model._default_manager.filter(
            connector_id=obj.connector_id, owner_id=obj.owner_id, remote_id=obj.remote_id
        ).first()
        if row is None:
            return str(_("Not stored"))
        opts = model._meta
        try:
            url = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[row.pk])
        except NoReverseMatch:
            return str(row)
        return format_html('<a href="{}">{} ({})</a>', url, row, opts.verbose_name)

    @staticmethod
    def resource_model(obj: WebhookDelivery) -> type[MirroredResource] | None:
        spec = REGISTRY.get(obj.event.partition("::")[0])
        return None if spec is None else spec.model

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('reprocess', opts)}")

    @admin.display(description=_("headers"))
    def headers_json(self, obj: WebhookDelivery) -> SafeString:
        # Rows stored before the request log masked the secret and dropped signatures.
        return pretty_json(redact_headers(obj.headers))

    @admin.display(description=_("body"))
    def body_json(self, obj: WebhookDelivery) -> SafeString | str:
        return json_or_text(obj.body) or EMPTY

    @admin.display(description=_("error"))
    def error_text(self, obj: WebhookDelivery) -> SafeString | str:
        # A rejection's error is the JSON answer that was sent; a failure's is a traceback.
        return json_or_text(obj.error) or EMPTY

    @admin.action(permissions=["reprocess"], description=_("Reprocess selected deliveries"))
    def reprocess(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        # In arrival order, the order Morph meant them in; defer(None) undoes the list's defer.
        counts = reprocess_many(queryset.defer(None).order_by("received_at", "pk"))

        total = sum(counts.values())
        labels = [(outcome.value, outcome.label) for outcome in Outcome] + [
            (ALREADY_APPLIED, _("already applied"))
        ]
        summary = ", ".join(f"{counts[name]} {label}" for name, label in labels if counts[name])
        message = ngettext(
            "Reprocessed %(count)d delivery: %(summary)s.",
            "Reprocessed %(count)d deliveries: %(summary)s.",
            total,
        ) % {"count": total, "summary": summary}
        trouble = counts[Outcome.FAILED] or counts[Outcome.REJECTED]
        self.message_user(request, message, messages.WARNING if trouble else messages.SUCCESS)
