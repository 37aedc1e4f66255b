from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import StageChange


@admin.register(StageChange)
class StageChangeAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["changed_at", "opportunity", "from_stage_id", "to_stage_id", "event", "recorded_at"]
    list_filter = ["to_stage_id", "event"]
    search_fields = ["opportunity__name", "opportunity__remote_id"]
    list_select_related = ["opportunity"]
    date_hierarchy = "changed_at"

    # The history is written by the receivers from what the CRM said; adding or editing rows by
    # hand would only make it disagree with the CRM. Viewing (and deleting) stays allowed.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StageChange | None = None) -> bool:
        return False
