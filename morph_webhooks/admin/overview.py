"""What the deliveries' overview page shows: deliveries per hour and outcome over the last day (runs
of hours without any collapsed to one row), each connection's last event, failures and silence,
the latest failures, and one connection's opportunities per stage name, open apart from won and
lost. One query each (two for the connections), however much data there is;
WebhookDeliveryAdmin serves the page and decides who sees what."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import Right, TruncHour
from django.utils import timezone
from django.utils.text import Truncator, capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..health import is_silent, silence_threshold
from ..models import FAILED_OUTCOMES, Connection, Opportunity, Outcome, Stage, StageType, WebhookDelivery
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
# Connections listed, those that need a look first; the Connections page lists them all.
OVERVIEW_CONNECTIONS = 50
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
    # Set on a row standing for a run of hours without deliveries: when the run ends.
    end: datetime | None = None


@dataclass
class Failure:
    delivery: WebhookDelivery
    url: str
    summary: str


@dataclass
class ConnectionRow:
    connector_id: str
    owner_id: str
    # None: no delivery yet, or not a registered connection (only failed deliveries of it are known).
    last_event_at: datetime | None
    # Failed or dead deliveries over the hours the overview shows.
    failures: int
    # Seconds without events after which it is silent (0: never), as the health check judges it.
    silence_threshold: float
    silent: bool
    registered: bool
    deliveries_url: str

    @property
    def url(self) -> str:
        """Its deliveries: made for the rows shown only."""
        return connection_url(self.deliveries_url, self.connector_id, self.owner_id)

    @property
    def silence_after(self) -> str:
        return duration_text(self.silence_threshold) if self.silence_threshold > 0 else str(_("never"))


@dataclass
class CurrencyTotal:
    currency: str
    count: int
    amount: str


@dataclass
class StageRow:
    # The stage's name, or its id until the stage arrives; "" for opportunities without a stage.
    name: str
    # Every stage of that name in the connection, in any pipeline.
    stage_ids: list[str]
    url: str | None
    currencies: list[CurrencyTotal]


@dataclass
class OpportunitySection:
    """The opportunities whose stage is of one kind: open (or of a type not known yet), won, lost."""

    kind: str
    title: str
    stages: list[StageRow]
    currency_totals: list[CurrencyTotal]


# Won and lost deals are not open; a stage of type UNKNOWN, or not arrived yet, counts as open.
SECTIONS = {
    "open": _("Open opportunities by stage"),
    StageType.WON.value: _("Won opportunities by stage"),
    StageType.LOST.value: _("Lost opportunities by stage"),
}


def error_summary(tail: str) -> str:
    """The last non-empty line of an error: a traceback's exception, or a rejection's answer in
    words."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return Truncator(answer_text(lines[-1]) if lines else "").chars(ERROR_SUMMARY)


def answer_text(line: str) -> str:
    """A rejection's JSON answer (``{"error": "invalid_event", "fields": {...}}`` or ``{"error":
    ..., "detail": ...}``) as a sentence, e.g. ``Invalid event: data.fields.amount: A valid number
    is required.``; any other line as it is."""
    try:
        answer = json.loads(line)
    except ValueError:
        return line
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), str):
        return line
    parts = []
    fields = answer.get("fields")
    if isinstance(fields, dict):
        for path, messages in fields.items():
            said = " ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
            parts.append(f"{path}: {said}")
    if answer.get("detail"):
        parts.append(str(answer["detail"]))
    what = capfirst(answer["error"].replace("_", " "))
    return f"{what}: {'; '.join(parts)}" if parts else what


def first_hour_shown(now: datetime) -> datetime:
    # Whole hours in the current time zone, as TruncHour cuts them (not always whole UTC hours:
    # India is UTC+5:30), counted back in UTC so that a daylight saving change is no hour
    # longer or shorter; the current, partial hour is the last of the 24.
    this_hour = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    return this_hour.astimezone(dt_timezone.utc) - timedelta(hours=OVERVIEW_HOURS - 1)


def deliveries_per_hour(now: datetime) -> list[HourRow]:
    first_hour = first_hour_shown(now)
    # Every outcome named, and the status counted rather than the row: PostgreSQL then reads the
    # day from the (status, received_at) index alone (an index-only scan), not the rows behind
    # the received_at index, a third of the time on a busy log.
    counts = list(
        WebhookDelivery.objects.filter(received_at__gte=first_hour, status__in=Outcome.values)
        .annotate(hour=TruncHour("received_at"))
        .values("hour", "status")
        .annotate(count=Count("status"))
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
    rows: list[HourRow] = []
    for index, counter in enumerate(per_hour):
        start = first_hour + timedelta(hours=index)
        total = sum(counter.values())
        if not total and rows and rows[-1].end is not None:
            # A quiet night is one row, not eight rows of zeros.
            rows[-1].end = start + timedelta(hours=1)
            continue
        rows.append(
            HourRow(
                start=start,
                counts=[(outcome.value, counter[outcome]) for outcome in OVERVIEW_OUTCOMES],
                total=total,
                end=None if total else start + timedelta(hours=1),
            )
        )
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


def connection_rows(now: datetime, deliveries_url: str) -> list[ConnectionRow]:
    """Every connection, with its last event, its failures since ``first_hour_shown(now)`` and
    whether the health check finds it silent: those silent first, then those with the most
    failures. Two statements whatever the number of connections and deliveries."""
    failures = {
        (row["connector_id"], row["owner_id"]): row["count"]
        # Answered by the (status, received_at) index: only the failures are read.
        for row in WebhookDelivery.objects.filter(
            status__in=FAILED_OUTCOMES, received_at__gte=first_hour_shown(now)
        )
        .values("connector_id", "owner_id")
        .annotate(count=Count("pk"))
        .order_by()
    }
    rows = []
    # One statement, as the health check's silence check runs it; tuples, not model instances:
    # with thousands of connections, building a model per connection costs more than the query.
    connections = Connection.objects.annotate(last_event_at=Connection.last_event()).values_list(
        "connector_id", "owner_id", "last_event_at"
    )
    for connector_id, owner_id, last_event_at in connections:
        pair = (connector_id, owner_id)
        threshold = silence_threshold(*pair)
        rows.append(
            ConnectionRow(
                *pair,
                last_event_at=last_event_at,
                failures=failures.pop(pair, 0),
                silence_threshold=threshold,
                silent=last_event_at is not None and is_silent(threshold, last_event_at, now),
                registered=True,
                deliveries_url=deliveries_url,
            )
        )
    # Failures of a connection that is not registered: logged by a version that registered only
    # the connections of applied events, or its registration failed (logged).
    rows += [
        ConnectionRow(
            *pair,
            last_event_at=None,
            failures=count,
            silence_threshold=silence_threshold(*pair),
            silent=False,
            registered=False,
            deliveries_url=deliveries_url,
        )
        for pair, count in failures.items()
    ]
    rows.sort(key=lambda row: (not row.silent, -row.failures, row.connector_id, row.owner_id))
    return rows


# (seconds, singular, plural) of the units a threshold is shown in.
UNITS = [
    (86400, "%(count)d day", "%(count)d days"),
    (3600, "%(count)d hour", "%(count)d hours"),
    (60, "%(count)d minute", "%(count)d minutes"),
]


def duration_text(seconds: float) -> str:
    """A threshold as it was most likely configured: in days, hours, minutes or seconds."""
    for unit, one, many in UNITS:
        if seconds >= unit and seconds % unit == 0:
            count = int(seconds // unit)
            return ngettext(one, many, count) % {"count": count}
    return f"{seconds:g} s"


def connection_url(deliveries_url: str, connector_id: str, owner_id: str) -> str:
    return f"{deliveries_url}?{urlencode({'connector_id': connector_id, 'owner_id': owner_id})}"


def latest_failures(delivery_url: Callable[[WebhookDelivery], str]) -> list[Failure]:
    return [
        Failure(delivery=delivery, url=delivery_url(delivery), summary=error_summary(delivery.error_tail))
        for delivery in WebhookDelivery.objects.filter(status__in=TROUBLE)
        # Only the end of the error: a traceback can be long, and its last line says the most.
        .defer("body", "headers", "error")
        .annotate(error_tail=Right("error", ERROR_TAIL))
        .order_by("-received_at", "-pk")[:OVERVIEW_FAILURES]
    ]


def opportunities_by_stage(
    changelist_url: str, connection: Mapping[str, str]
) -> dict[tuple[str, str], list[OpportunitySection]]:
    """Alive opportunities by stage name and currency, open apart from won and lost, for each
    connection holding some (only the one ``connection`` names, when it names one): amounts of
    two tenants are never added up. Each stage links to ``changelist_url`` filtered on it. A stage
    is looked up in its opportunity's connector and owner, within the one query."""
    stage = Stage.objects.filter(
        connector_id=OuterRef("connector_id"), owner_id=OuterRef("owner_id"), remote_id=OuterRef("stage_id")
    )
    # connection -> kind -> stage name -> the stage row; and its amounts per currency
    grouped: dict[tuple[str, str], dict[str, dict[str, StageRow]]] = {}
    sums: dict[tuple[str, str, str, str, str], tuple[int, Decimal | None]] = {}
    for row in (
        Opportunity.objects.alive()
        .filter(**connection)
        .annotate(
            stage_name=Subquery(stage.values("name")[:1]), stage_type=Subquery(stage.values("type")[:1])
        )
        .values("connector_id", "owner_id", "stage_id", "stage_name", "stage_type", "currency")
        .annotate(count=Count("pk"), amount=Sum("amount"))
        .order_by()
    ):
        pair = (row["connector_id"], row["owner_id"])
        kind = row["stage_type"] if row["stage_type"] in SECTIONS else "open"
        name = row["stage_name"] or row["stage_id"]
        kinds = grouped.setdefault(pair, {kind: {} for kind in SECTIONS})
        stage_row = kinds[kind].setdefault(name, StageRow(name=name, stage_ids=[], url=None, currencies=[]))
        if row["stage_id"] not in stage_row.stage_ids:
            stage_row.stage_ids.append(row["stage_id"])
        key = (*pair, kind, name, row["currency"])
        count, amount = sums.get(key, (0, None))
        sums[key] = (count + row["count"], add(amount, row["amount"]))
    return {
        pair: connection_sections(changelist_url, pair, kinds, sums)
        for pair, kinds in sorted(grouped.items())
    }


def connection_sections(
    changelist_url: str,
    pair: tuple[str, str],
    kinds: dict[str, dict[str, StageRow]],
    sums: dict[tuple[str, str, str, str, str], tuple[int, Decimal | None]],
) -> list[OpportunitySection]:
    sections = []
    for kind, title in SECTIONS.items():
        stages = sorted(
            kinds[kind].values(),
            # Opportunities without a stage last: they are the exception, not the first thing to read.
            key=lambda stage_row: (stage_row.name == "", stage_row.name.casefold(), stage_row.name),
        )
        totals: dict[str, tuple[int, Decimal | None]] = {}
        for stage_row in stages:
            stage_row.url = stage_url(changelist_url, pair, stage_row.stage_ids)
            for (*row_pair, row_kind, name, currency), (count, amount) in sorted(sums.items()):
                if tuple(row_pair) == pair and row_kind == kind and name == stage_row.name:
                    stage_row.currencies.append(CurrencyTotal(currency, count, sum_text(amount, currency)))
                    total_count, total_amount = totals.get(currency, (0, None))
                    totals[currency] = (total_count + count, add(total_amount, amount))
        sections.append(
            OpportunitySection(
                kind=kind,
                title=str(title),
                stages=stages,
                currency_totals=[
                    CurrencyTotal(currency, count, sum_text(amount, currency))
                    for currency, (count, amount) in sorted(totals.items())
                ],
            )
        )
    return sections


def no_opportunities(changelist_url: str) -> list[OpportunitySection]:
    return connection_sections(changelist_url, ("", ""), {kind: {} for kind in SECTIONS}, {})


def stage_url(changelist_url: str, pair: tuple[str, str], stage_ids: list[str]) -> str | None:
    """The opportunity list of the connection ``pair`` filtered on these stages (its stage filter,
    or an exact ``__in`` lookup for a name several stages share), without deleted opportunities."""
    ids = sorted(stage_id for stage_id in stage_ids if stage_id)
    if not ids:
        return None
    stages = {"stage_id": ids[0]} if len(ids) == 1 else {"stage_id__in": ",".join(ids)}
    query = urlencode({**stages, "connector_id": pair[0], "owner_id": pair[1], "deleted": "no"})
    return f"{changelist_url}?{query}"


def add(total: Decimal | None, amount: Decimal | None) -> Decimal | None:
    # No amount at all is not the same as an amount of zero.
    if amount is None:
        return total
    return amount if total is None else total + amount


def sum_text(amount: Decimal | None, currency: str) -> str:
    # No amount at all is not the same as an amount of zero.
    return "" if amount is None else amount_text(amount, currency)
