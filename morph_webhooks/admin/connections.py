from __future__ import annotations

from typing import Any

from django.contrib.admin import display as admin_display
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..models import Connection
from .display import ModelAdmin, pretty_json


class ConnectionAdmin(ModelAdmin):
    """Connections register themselves with their first event; one added here before any event
    arrives can be synced from Morph's API on day one. The sync state is the sync's to write."""

    list_display = [
        "connector_id",
        "owner_id",
        "created_at",
        "last_sync_started_at",
        "last_sync_finished_at",
        "last_sync_outcome",
    ]
    list_filter = ["last_sync_outcome", "connector_id"]
    search_fields = ["connector_id__exact", "owner_id__exact"]
    ordering = ["connector_id", "owner_id"]
    sync_fields: list[Any] = [
        "created_at",
        "last_sync_started_at",
        "last_sync_finished_at",
        "last_sync_outcome",
        "last_sync_error",
        "counts",
        "resume_cursors",
    ]
    fieldsets = [
        (None, {"fields": ["connector_id", "owner_id"]}),
        (_("Sync from Morph's API"), {"fields": list(sync_fields)}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Once added, a connection is what Morph's events and the API name: not renamed here.
        return self.sync_fields + (["connector_id", "owner_id"] if obj is not None else [])

    @admin_display(description=_("last sync counts"))
    def counts(self, obj: Connection) -> Any:
        return pretty_json(obj.last_sync_counts)

    @admin_display(description=_("resume cursors"))
    def resume_cursors(self, obj: Connection) -> Any:
        return pretty_json(obj.cursors)
