from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import Connection
from ..sync_queue import enqueue_sync, sync_backend_problem
from .display import EMPTY, ModelAdmin, field_as, moment, pretty_json

# What the list shows of a failed sync's error; the connection's page shows all of it.
ERROR_CHARS = 80


class ConnectionAdmin(ModelAdmin):
    """Connections register themselves with their first event; one added here before any event
    arrives can be synced from Morph's API on day one. The sync state is the sync's to write."""

    # Short headers: a header does not wrap, and the list must fit 1400 px.
    list_display = [
        "connector",
        "owner",
        "last_event_received",
        "last_sync",
        "outcome",
        "last_sync_totals",
        "last_sync_problem",
    ]
    list_filter = ["last_sync_outcome", "connector_id"]
    search_fields = ["connector_id__exact", "owner_id__exact"]
    ordering = ["connector_id", "owner_id"]
    actions = ["sync_now"]
    empty_value_display = EMPTY
    change_list_template = "morph_webhooks/admin/change_list.html"
    # Times as every list and page of the app writes them (display.moment), not in the project's
    # DATETIME_FORMAT.
    sync_fields: list[Any] = [
        "created",
        "running",
        "last_sync_started",
        "last_sync_finished",
        "last_sync_outcome",
        "last_sync_error",
        "counts",
        "resume_cursors",
    ]
    fieldsets = [
        (None, {"fields": ["connector_id", "owner_id"]}),
        (_("Sync from Morph's API"), {"fields": list(sync_fields)}),
    ]

    connector = field_as("connector_id", _("connector"))
    owner = field_as("owner_id", _("owner (tenant)"))
    last_sync = field_as("last_sync_finished_at", _("last sync"))
    created = field_as("created_at", _("created"))
    last_sync_started = field_as("last_sync_started_at", _("last sync started"))
    last_sync_finished = field_as("last_sync_finished_at", _("last sync finished"))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Connection]:
        # The newest delivery of each connection, within the page's one query (the health
        # check's subquery).
        connections: QuerySet[Connection] = super().get_queryset(request)
        return connections.annotate(last_event_at=Connection.last_event())

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Once added, a connection is what Morph's events and the API name: not renamed here.
        return self.sync_fields + (["connector_id", "owner_id"] if obj is not None else [])

    @admin.display(description=_("last event"), ordering="last_event_at")
    def last_event_received(self, obj: Connection) -> str:
        return moment(getattr(obj, "last_event_at", None)) or EMPTY

    @admin.display(description=_("outcome"), ordering="last_sync_outcome")
    def outcome(self, obj: Connection) -> str:
        # A running sync has no outcome yet: the previous one's would mislead.
        if obj.sync_running():
            return _("running since %(started)s") % {"started": moment(obj.last_sync_started_at)}
        return obj.get_last_sync_outcome_display() or EMPTY

    @admin.display(description=_("sync running"))
    def running(self, obj: Connection) -> str:
        if not obj.sync_running():
            return str(_("no"))
        # Each page the sync stores extends its hold: only a sync that stopped lets it run out.
        return _(
            "since %(started)s; should it stop making progress, another sync can start after %(until)s"
        ) % {
            "started": moment(obj.last_sync_started_at),
            "until": moment(obj.sync_lease_until),
        }

    @admin.display(description=_("counts"))
    def last_sync_totals(self, obj: Connection) -> str:
        totals: dict[str, int] = {}
        for counts in obj.last_sync_counts.values():
            for outcome, count in counts.items():
                totals[outcome] = totals.get(outcome, 0) + count
        return ", ".join(f"{count} {outcome}" for outcome, count in totals.items() if count) or EMPTY

    @admin.display(description=_("error"))
    def last_sync_problem(self, obj: Connection) -> str:
        return Truncator(obj.last_sync_error).chars(ERROR_CHARS) or EMPTY

    @admin.display(description=_("last sync counts"))
    def counts(self, obj: Connection) -> Any:
        return pretty_json(obj.last_sync_counts)

    @admin.display(description=_("resume cursors"))
    def resume_cursors(self, obj: Connection) -> Any:
        return pretty_json(obj.cursors)

    def has_sync_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('sync', opts)}")

    @admin.action(permissions=["sync"], description=_("Sync now from Morph's API"))
    def sync_now(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        connections = list(queryset.order_by("connector_id", "owner_id"))
        # A sync takes minutes: it must not run inside this request.
        problem = sync_backend_problem(inline_is_usable=False)
        if problem:
            commands = "; ".join(connection.sync_command() for connection in connections)
            self.message_user(
                request,
                _("%(problem)s Nothing was queued. Run instead: %(commands)s")
                % {"problem": problem, "commands": commands},
                messages.WARNING,
            )
            return
        for connection in connections:
            enqueue_sync(connection, [])
        message = ngettext(
            "Queued a sync of %(count)d connection: the task backend's workers run it.",
            "Queued a sync of %(count)d connections: the task backend's workers run them.",
            len(connections),
        ) % {"count": len(connections)}
        self.message_user(request, message, messages.SUCCESS)
