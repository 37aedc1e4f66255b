from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from .display import ReadOnlyAdmin
from .filters import ConnectionFilter


class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "key",
        "connector_id",
        "owner_id",
        "event",
        "remote_id",
        "outcome",
        "deliveries",
        "first_seen_at",
        "last_seen_at",
    ]
    list_filter = [ConnectionFilter, "outcome"]
    # By key only: the table has no index on remote_id, and an OR with it would scan every key.
    # The deliveries list finds the events of one opportunity.
    search_fields = ["key__exact"]
    ordering = ["-first_seen_at"]
    fieldsets = [
        (None, {"fields": ["key", "connector_id", "owner_id", "event", "remote_id"]}),
        (_("Outcome"), {"fields": ["outcome", "deliveries", "first_seen_at", "last_seen_at"]}),
    ]
