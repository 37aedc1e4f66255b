from __future__ import annotations

from django.contrib import admin
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import IdempotencyKey
from .display import ReadOnlyAdmin, connection_text, event_text, field_as, short_key
from .filters import ConnectionFilter


class IdempotencyKeyAdmin(ReadOnlyAdmin):
    # Short columns, the key's start and the connection in one, when it was last seen on its page
    # (the deliveries count says whether it was seen again): the list must fit 1400 px with the
    # navigation sidebar open.
    list_display = [
        "short_key",
        "connection",
        "event_type",
        "morph_id",
        "outcome",
        "deliveries",
        "first_seen",
    ]
    list_display_links = ["short_key"]
    list_filter = [ConnectionFilter, "outcome"]
    # By key only: the table has no index on remote_id, and an OR with it would scan every key.
    # The deliveries list finds the events of one opportunity.
    search_fields = ["key__exact"]
    ordering = ["-first_seen_at"]
    fieldsets = [
        (None, {"fields": ["key", "connector", "connection_owner", "event", "morph_id"]}),
        (_("Outcome"), {"fields": ["outcome", "deliveries", "first_seen", "last_seen"]}),
    ]

    connector = field_as("connector_id", _("connector"))
    connection_owner = field_as("owner_id", _("owner (tenant)"))
    morph_id = field_as("remote_id", _("Morph id"))
    first_seen = field_as("first_seen_at", _("first seen"))
    last_seen = field_as("last_seen_at", _("last seen"))

    @admin.display(description=_("key"), ordering="key")
    def short_key(self, obj: IdempotencyKey) -> SafeString | str:
        return short_key(obj.key)

    @admin.display(description=_("event"), ordering="event")
    def event_type(self, obj: IdempotencyKey) -> SafeString | str:
        return event_text(obj.event)

    @admin.display(description=_("connection"), ordering="connector_id")
    def connection(self, obj: IdempotencyKey) -> str:
        return connection_text(obj.connector_id, obj.owner_id)
