from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Right, TruncHour
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..events import unique_keys
from ..models import IdempotencyKey, Opportunity, OpportunityQuerySet, Outcome, WebhookDelivery
from ..processing import ALREADY_APPLIED, reprocess_delivery, reprocess_outcome
from ..redaction import redact_headers

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


def amount_text(amount: Decimal, currency: str) -> str:
    """``amount`` with thousands separators and ``currency``, e.g. ``12,500.00 EUR``."""
    # The column keeps six decimals; show two unless the CRM sent more precision than that.
    exponent = amount.normalize().as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"{number_format(amount, decimal_pos=places, force_grouping=True)} {currency}".strip()


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


class HTTPStatusFilter(admin.SimpleListFilter):
    """The statuses the request log can hold, listed without scanning the log for them (a plain
    field filter would run SELECT DISTINCT over every delivery on each page)."""

    title = _("HTTP status")
    parameter_name = "http_status"
    # Answers recorded in the log: applied or queued, invalid, connector or owner refused, too
    # large, not JSON, failed, unavailable. 401 and network refusals are never recorded.
    STATUSES = (200, 400, 403, 413, 415, 500, 503)

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, Any]]:
        return [(str(code), f"{code} {HTTPStatus(code).phrase}") for code in self.STATUSES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value in {str(code) for code in self.STATUSES}:
            return queryset.filter(http_status=int(value))
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
    # Morph ids are matched exactly: "=" would compare case-insensitively, which no index serves.
    search_fields = ["name", "remote_id__exact"]
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
        return None if obj.amount is None else amount_text(obj.amount, obj.currency)

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
    # By key only: the table has no index on remote_id, and an OR with it would scan every key.
    # The deliveries list finds the events of one opportunity.
    search_fields = ["key__exact"]
    ordering = ["-first_seen_at"]
    fieldsets = [
        (None, {"fields": ["key", "connector_id", "owner_id", "event", "remote_id"]}),
        (_("Outcome"), {"fields": ["outcome", "deliveries", "first_seen_at", "last_seen_at"]}),
    ]


class DeliveryChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[WebhookDelivery]:
        # Bodies run up to MAX_BODY_SIZE each; a page of them is not worth loading for one list.
        return super().get_queryset(request, exclude_parameters).defer("body", "raw_body", "headers", "error")


# The overview's columns, from "all is well" to "someone should look"; an outcome missing here
# still gets a column, at the end, so that the columns always add up to the total.
OVERVIEW_ORDER = ["processed", "duplicate", "stale", "ignored", "queued", "rejected", "failed", "dead"]
OVERVIEW_OUTCOMES = sorted(
    Outcome, key=lambda o: OVERVIEW_ORDER.index(o.value) if o.value in OVERVIEW_ORDER else len(OVERVIEW_ORDER)
)
# The outcomes that need a person: the request was refused, or its processing failed.
TROUBLE = [o.value for o in Outcome if o.value in ("rejected", "failed", "dead")]
OVERVIEW_HOURS = 24
OVERVIEW_FAILURES = 20
# Enough of the error's end for a traceback's last line (the exception) or a rejection's JSON.
ERROR_TAIL = 300
ERROR_SUMMARY = 160


@dataclass
class HourRow:
    start: datetime
    counts: list[tuple[str, int]]
    total: int = 0
    # (outcome, count, width in whole percent of the busiest hour) for the stacked bar.
    bar: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass
class Failure:
    delivery: WebhookDelivery
    url: str
    summary: str


@dataclass
class CurrencyTotal:
    currency: str
    count: int
    amount: str


@dataclass
class StageRow:
    stage_id: str
    url: str | None
    currencies: list[CurrencyTotal]


def error_summary(tail: str) -> str:
    """The last non-empty line of an error: a traceback's exception, or a rejection's JSON."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return Truncator(lines[-1] if lines else "").chars(ERROR_SUMMARY)


def hour_rows(counts: Iterable[Mapping[str, Any]], first_hour: datetime) -> list[HourRow]:
    """One row per hour from ``first_hour`` (in UTC) on, newest first, every outcome counted."""
    per_hour: list[Counter[str]] = [Counter() for _ in range(OVERVIEW_HOURS)]
    for count in counts:
        # Placed by its offset in UTC: subtracting two datetimes of the same zone compares wall
        # clocks, which is an hour off across a daylight saving change.
        index = int((count["hour"].astimezone(dt_timezone.utc) - first_hour) / timedelta(hours=1))
        # A delivery received since `now` was read may fall in the next hour: not shown yet.
        if 0 <= index < OVERVIEW_HOURS:
            per_hour[index][count["status"]] += count["count"]
    rows = [
        HourRow(
            start=first_hour + timedelta(hours=index),
            counts=[(outcome.value, counter[outcome]) for outcome in OVERVIEW_OUTCOMES],
            total=sum(counter.values()),
        )
        for index, counter in enumerate(per_hour)
    ]
    busiest = max((row.total for row in rows), default=0)
    for row in rows:
        # At least 1% so that a single failure among thousands still shows.
        row.bar = [
            (outcome, count, max(1, round(100 * count / busiest))) for outcome, count in row.counts if count
        ]
    rows.reverse()
    return rows


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
    list_filter = ["status", HTTPStatusFilter]
    # Both columns are indexed; exact lookups use the indexes, "=" (case-insensitive) would not.
    search_fields = ["idempotency_key__exact", "remote_id__exact"]
    ordering = ["-received_at"]
    actions = ["reprocess"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "received_at",
                    "status",
                    "http_status",
                    "attempts",
                    "next_attempt_at",
                    "processed_at",
                    "reprocessed_at",
                ]
            },
        ),
        (_("Event"), {"fields": ["event", "connector_id", "owner_id", "idempotency_key", "remote_id"]}),
        (_("Request"), {"fields": ["remote_addr", "path", "headers_json", "body_json"]}),
        (_("Error"), {"fields": ["error_text"]}),
    ]

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
        """Deliveries per hour and outcome over the last day, the latest failures, and the open
        opportunities per stage. A fixed number of queries, however much data there is."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name

        now = timezone.now()
        # Whole hours in the current time zone, as TruncHour cuts them (not always whole UTC hours:
        # India is UTC+5:30), counted back in UTC so that a daylight saving change is no hour
        # longer or shorter; the current, partial hour is the last of the 24.
        this_hour = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
        first_hour = this_hour.astimezone(dt_timezone.utc) - timedelta(hours=OVERVIEW_HOURS - 1)
        counts = list(
            WebhookDelivery.objects.filter(received_at__gte=first_hour)
            .annotate(hour=TruncHour("received_at"))
            .values("hour", "status")
            .annotate(count=Count("pk"))
            .order_by()
        )
        rows = hour_rows(counts, first_hour)

        failures = [
            Failure(
                delivery=delivery,
                url=reverse(
                    f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                    args=[delivery.pk],
                    current_app=self.admin_site.name,
                ),
                summary=error_summary(delivery.error_tail),
            )
            for delivery in WebhookDelivery.objects.filter(status__in=TROUBLE)
            # Only the end of the error: a traceback can be long, and its last line says the most.
            .defer("body", "headers", "error")
            .annotate(error_tail=Right("error", ERROR_TAIL))
            .order_by("-received_at", "-pk")[:OVERVIEW_FAILURES]
        ]

        context = {
            **self.admin_site.each_context(request),
            "title": _("Webhook overview"),
            "opts": self.opts,
            "outcomes": [(outcome.value, outcome.label) for outcome in OVERVIEW_OUTCOMES],
            "hours": rows,
            "hours_total": sum(row.total for row in rows),
            "outcome_totals": [
                (outcome.value, sum(row.counts[index][1] for row in rows))
                for index, outcome in enumerate(OVERVIEW_OUTCOMES)
            ],
            "trouble": TROUBLE,
            "failures": failures,
            "failure_limit": OVERVIEW_FAILURES,
            # Whole-percent widths as classes rather than style attributes, which a Content
            # Security Policy without 'unsafe-inline' would drop.
            "bar_widths": range(1, 101),
            **self.opportunity_context(request),
        }
        return TemplateResponse(request, self.overview_template, context)

    def opportunity_context(self, request: HttpRequest) -> dict[str, Any]:
        """Open opportunities by stage and currency, for those allowed to see opportunities: seeing
        the request log does not imply seeing the pipeline's amounts."""
        if not self.admin_site.is_registered(Opportunity):
            return {"show_opportunities": False}
        if not self.admin_site.get_model_admin(Opportunity).has_view_permission(request):
            return {"show_opportunities": False}
        changelist = reverse(
            f"admin:{Opportunity._meta.app_label}_{Opportunity._meta.model_name}_changelist",
            current_app=self.admin_site.name,
        )
        stages: list[StageRow] = []
        totals: dict[str, CurrencyTotal] = {}
        sums: dict[str, Decimal] = {}
        for row in (
            Opportunity.objects.alive()
            .values("stage_id", "currency")
            .annotate(count=Count("pk"), amount=Sum("amount"))
            .order_by("stage_id", "currency")
        ):
            if not stages or stages[-1].stage_id != row["stage_id"]:
                # The opportunity list filters on these exact values (its list_filter).
                query = urlencode({"stage_id": row["stage_id"], "deleted": "no"})
                url = f"{changelist}?{query}" if row["stage_id"] else None
                stages.append(StageRow(stage_id=row["stage_id"], url=url, currencies=[]))
            stages[-1].currencies.append(
                CurrencyTotal(row["currency"], row["count"], self.sum_text(row["amount"], row["currency"]))
            )
            total = totals.setdefault(row["currency"], CurrencyTotal(row["currency"], 0, ""))
            total.count += row["count"]
            if row["amount"] is not None:
                sums[row["currency"]] = sums.get(row["currency"], Decimal(0)) + row["amount"]
        for currency, total in totals.items():
            total.amount = self.sum_text(sums.get(currency), currency)
        # Opportunities without a stage last: they are the exception, not the first thing to read.
        stages.sort(key=lambda stage: stage.stage_id == "")
        return {
            "show_opportunities": True,
            "stages": stages,
            "currency_totals": sorted(totals.values(), key=lambda total: total.currency),
        }

    @staticmethod
    def sum_text(amount: Decimal | None, currency: str) -> str:
        # No amount at all is not the same as an amount of zero.
        return "" if amount is None else amount_text(amount, currency)

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('reprocess', opts)}")

    @admin.display(description=_("headers"))
    def headers_json(self, obj: WebhookDelivery) -> SafeString:
        # Rows stored before the request log masked the secret and dropped signatures.
        return pretty_json(redact_headers(obj.headers))

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
            counts[reprocess_outcome(result)] += 1

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
