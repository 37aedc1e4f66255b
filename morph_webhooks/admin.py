from __future__ import annotations

import json
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .events import unique_keys
from .models import IdempotencyKey, Opportunity, OpportunityQuerySet, Outcome, WebhookDelivery
from .processing import reprocess_delivery

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    ModelAdmin = admin.ModelAdmin[Any]
else:
    # ModelAdmin is generic only in the type stubs.
    ModelAdmin = admin.ModelAdmin


def pre(text: str) -> SafeString:
    return format_html("<pre>{}</pre>", text)


def pretty_json(value: Any) -> SafeString:
    return pre(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def json_or_text(text: str) -> SafeString | None:
    """``text`` pretty-printed if it is JSON, as it is otherwise."""
    if not text:
        return None
    try:
        # A body with a repeated key is shown as sent: re-encoding it would silently drop one of
        # the values, hiding what got the request rejected; nesting too deep to parse stays text too.
        value = json.loads(text, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError):
        return pre(text)
    return pretty_json(value)


class ReadOnlyAdmin(ModelAdmin):
    """Rows are written by processing only; the admin shows them."""

    # Counting a large table on every page is slower than the page itself.
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Explicit rather than implied by the missing change permission, so that the display
        # methods named in the fieldsets stay valid even if a subclass grants it.
        return flatten_fieldsets(self.get_fieldsets(request, obj))


class DeletedFilter(admin.SimpleListFilter):
    title = _("deleted")
    parameter_name = "deleted"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, Any]]:
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        assert isinstance(queryset, OpportunityQuerySet)
        if self.value() == "yes":
            return queryset.deleted()
        if self.value() == "no":
            return queryset.alive()
        return None


@admin.register(Opportunity)
class OpportunityAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "amount_with_currency",
        "stage_id",
        "pipeline_id",
        "connector_id",
        "owner_id",
        "remote_updated_at",
        "deleted",
    ]
    list_filter = ["connector_id", "stage_id", "pipeline_id", DeletedFilter]
    search_fields = ["name", "=remote_id"]
    ordering = ["-remote_updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "amount", "currency", "stage_id", "pipeline_id", "crm_owner_id"]}),
        (
            _("Morph"),
            {
                "fields": [
                    "connector_id",
                    "owner_id",
                    "remote_id",
                    "remote_created_at",
                    "remote_updated_at",
                    "deleted_at",
                ]
            },
        ),
        (_("Related records"), {"fields": ["contact_ids", "company_ids", "engagement_ids"]}),
        (_("As Morph sent it"), {"fields": ["extra_fields_json", "warnings_json", "raw_resource_json"]}),
        (_("Local copy"), {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description=_("amount"), ordering="amount")
    def amount_with_currency(self, obj: Opportunity) -> str | None:
        if obj.amount is None:
            return None
        # The column keeps six decimals; show two unless the CRM sent more precision than that.
        exponent = obj.amount.normalize().as_tuple().exponent
        places = max(2, -exponent) if isinstance(exponent, int) else 2
        return f"{number_format(obj.amount, decimal_pos=places, force_grouping=True)} {obj.currency}".strip()

    @admin.display(description=_("deleted"), boolean=True, ordering="deleted_at")
    def deleted(self, obj: Opportunity) -> bool:
        return obj.is_deleted

    @admin.display(description=_("extra fields"))
    def extra_fields_json(self, obj: Opportunity) -> SafeString:
        return pretty_json(obj.extra_fields)

    @admin.display(description=_("warnings"))
    def warnings_json(self, obj: Opportunity) -> SafeString:
        return pretty_json(obj.warnings)

    @admin.display(description=_("raw resource"))
    def raw_resource_json(self, obj: Opportunity) -> SafeString | None:
        return None if obj.raw_resource is None else pretty_json(obj.raw_resource)


@admin.register(IdempotencyKey)
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
    list_filter = ["outcome"]
    search_fields = ["=key", "=remote_id"]
    ordering = ["-first_seen_at"]
    fieldsets = [
        (None, {"fields": ["key", "connector_id", "owner_id", "event", "remote_id"]}),
        (_("Outcome"), {"fields": ["outcome", "deliveries", "first_seen_at", "last_seen_at"]}),
    ]


class DeliveryChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[WebhookDelivery]:
        # Bodies run up to MAX_BODY_SIZE each; a page of them is not worth loading for one list.
        return super().get_queryset(request, exclude_parameters).defer("body", "headers", "error")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "received_at",
        "event",
        "status",
        "http_status",
        "connector_id",
        "owner_id",
        "idempotency_key",
        "remote_id",
        "attempts",
    ]
    list_filter = ["status", "http_status"]
    search_fields = ["=idempotency_key", "=remote_id"]
    ordering = ["-received_at"]
    actions = ["reprocess"]
    fieldsets = [
        (None, {"fields": ["received_at", "status", "http_status", "attempts", "processed_at"]}),
        (_("Event"), {"fields": ["event", "connector_id", "owner_id", "idempotency_key", "remote_id"]}),
        (_("Request"), {"fields": ["remote_addr", "path", "headers_json", "body_json"]}),
        (_("Error"), {"fields": ["error_text"]}),
    ]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return DeliveryChangeList

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('reprocess', opts)}")

    @admin.display(description=_("headers"))
    def headers_json(self, obj: WebhookDelivery) -> SafeString:
        return pretty_json(obj.headers)

    @admin.display(description=_("body"))
    def body_json(self, obj: WebhookDelivery) -> SafeString | None:
        return json_or_text(obj.body)

    @admin.display(description=_("error"))
    def error_text(self, obj: WebhookDelivery) -> SafeString | None:
        # A rejection's error is the JSON answer that was sent; a failure's is a traceback.
        return json_or_text(obj.error)

    @admin.action(permissions=["reprocess"], description=_("Reprocess selected deliveries"))
    def reprocess(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        counts: Counter[str] = Counter()
        # In arrival order, the order Morph meant them in; defer(None) undoes the list's defer.
        for delivery in queryset.defer(None).order_by("received_at", "pk"):
            try:
                result = reprocess_delivery(delivery)
            except Exception:
                # process_event has recorded the failure on the delivery; the others still run.
                logger.exception("Reprocessing delivery %s failed", delivery.pk)
                counts[Outcome.FAILED] += 1
                continue
            counts[Outcome.REJECTED if result is None else result.status] += 1

        total = sum(counts.values())
        summary = ", ".join(f"{counts[outcome]} {outcome.label}" for outcome in Outcome if counts[outcome])
        message = ngettext(
            "Reprocessed %(count)d delivery: %(summary)s.",
            "Reprocessed %(count)d deliveries: %(summary)s.",
            total,
        ) % {"count": total, "summary": summary}
        trouble = counts[Outcome.FAILED] or counts[Outcome.REJECTED]
        self.message_user(request, message, messages.WARNING if trouble else messages.SUCCESS)
