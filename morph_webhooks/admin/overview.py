"""What the deliveries' overview page shows: deliveries per hour and outcome over the last day, the
latest failures, and the open opportunities per stage. One query each, however much data there
is; WebhookDeliveryAdmin serves the page and decides who sees what."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Sum
from django.db.models.functions import Right, TruncHour
from django.utils import timezone
from django.utils.text import Truncator

from ..models import Opportunity, Outcome, WebhookDelivery
from .display import amount_text

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


@dataclass
class OpenOpportunities:
    stages: list[StageRow]
    currency_totals: list[CurrencyTotal]


def error_summary(tail: str) -> str:
    """The last non-empty line of an error: a traceback's exception, or a rejection's JSON."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return Truncator(lines[-1] if lines else "").chars(ERROR_SUMMARY)


def first_hour_shown(now: datetime) -> datetime:
    # Whole hours in the current time zone, as TruncHour cuts them (not always whole UTC hours:
    # India is UTC+5:30), counted back in UTC so that a daylight saving change is no hour
    # longer or shorter; the current, partial hour is the last of the 24.
    this_hour = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    return this_hour.astimezone(dt_timezone.utc) - timedelta(hours=OVERVIEW_HOURS - 1)


def deliveries_per_hour(now: datetime) -> list[HourRow]:
    first_hour = first_hour_shown(now)
    counts = list(
        WebhookDelivery.objects.filter(received_at__gte=first_hour)
        .annotate(hour=TruncHour("received_at"))
        .values("hour", "status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return hour_rows(counts, first_hour)


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


def outcome_totals(rows: list[HourRow]) -> list[tuple[str, int]]:
    return [
        (outcome.value, sum(row.counts[index][1] for row in rows))
        for index, outcome in enumerate(OVERVIEW_OUTCOMES)
    ]


def latest_failures(delivery_url: Callable[[WebhookDelivery], str]) -> list[Failure]:
    return [
        Failure(delivery=delivery, url=delivery_url(delivery), summary=error_summary(delivery.error_tail))
        for delivery in WebhookDelivery.objects.filter(status__in=TROUBLE)
        # Only the end of the error: a traceback can be long, and its last line says the most.
        .defer("body", "headers", "error")
        .annotate(error_tail=Right("error", ERROR_TAIL))
        .order_by("-received_at", "-pk")[:OVERVIEW_FAILURES]
    ]


def open_opportunities(changelist_url: str) -> OpenOpportunities:
    """Open opportunities by stage and currency, each stage linked to ``changelist_url`` filtered on
    it."""
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
            url = f"{changelist_url}?{query}" if row["stage_id"] else None
            stages.append(StageRow(stage_id=row["stage_id"], url=url, currencies=[]))
        stages[-1].currencies.append(
            CurrencyTotal(row["currency"], row["count"], sum_text(row["amount"], row["currency"]))
        )
        total = totals.setdefault(row["currency"], CurrencyTotal(row["currency"], 0, ""))
        total.count += row["count"]
        if row["amount"] is not None:
            sums[row["currency"]] = sums.get(row["currency"], Decimal(0)) + row["amount"]
    for currency, total in totals.items():
        total.amount = sum_text(sums.get(currency), currency)
    # Opportunities without a stage last: they are the exception, not the first thing to read.
    stages.sort(key=lambda stage: stage.stage_id == "")
    return OpenOpportunities(
        stages=stages, currency_totals=sorted(totals.values(), key=lambda total: total.currency)
    )


def sum_text(amount: Decimal | None, currency: str) -> str:
    # No amount at all is not the same as an amount of zero.
    return "" if amount is None else amount_text(amount, currency)
