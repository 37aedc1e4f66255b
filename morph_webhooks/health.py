"""The health check: what an operator's monitoring asks of the app, for the ``health/`` view and the
``morph_webhooks_health`` command.

Morph shows its users no delivery dashboard and sends no alerts, so these checks are the only way a
team learns that events stopped arriving, pile up in a queue or die. Each check runs one query that
an index answers whatever the size of the request log, so that a load balancer may call it often.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from typing import Any

from django.db import DatabaseError, connections, router
from django.db.models import Case, Count, Min, Q, QuerySet, Value, When
from django.db.models.expressions import Col
from django.db.models.functions import Coalesce
from django.utils.timezone import now

from .conf import conf
from .models import FAILED_OUTCOMES, Connection, Outcome, SyncOutcome, WebhookDelivery

FAILURE_RATE_WINDOW = timedelta(hours=1)
SHOWN = 5  # connections named in a detail; the rest are counted


class Status(IntEnum):
    """A check's verdict, ordered by severity; the value is the command's exit status."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "status": str(self.status), "detail": self.detail}


@dataclass(frozen=True)
class Report:
    checks: list[CheckResult]

    @property
    def status(self) -> Status:
        return max((check.status for check in self.checks), default=Status.OK)

    def as_json(self) -> dict[str, object]:
        return {"status": str(self.status), "checks": [check.as_json() for check in self.checks]}


def database() -> CheckResult:
    try:
        with connections[router.db_for_read(WebhookDelivery)].cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return CheckResult("database", Status.CRITICAL, f"Unreachable: {type(exc).__name__}: {exc}".strip())
    return CheckResult("database", Status.OK, "Reachable.")


def dead_deliveries() -> CheckResult:
    # Answered by the (status, received_at) index.
    dead = WebhookDelivery.objects.filter(status=Outcome.DEAD).count()
    if not dead:
        return CheckResult("dead_deliveries", Status.OK, "No dead deliveries.")
    status = Status.CRITICAL if dead >= conf.HEALTH_DEAD_CRITICAL else Status.WARNING
    return CheckResult(
        "dead_deliveries",
        status,
        f"{dead} dead {plural(dead, 'delivery', 'deliveries')}: workers gave up on them; "
        "reprocess them once the cause is fixed.",
    )


def overdue_deliveries() -> CheckResult:
    # Answered by the partial index on next_attempt_at of queued deliveries, the sweeper's.
    cutoff = now() - timedelta(seconds=conf.HEALTH_OVERDUE_SECONDS)
    overdue = WebhookDelivery.objects.filter(status=Outcome.QUEUED, next_attempt_at__lt=cutoff).aggregate(
        count=Count("pk"), oldest=Min("next_attempt_at")
    )
    if not overdue["count"]:
        return CheckResult("overdue_deliveries", Status.OK, "No queued delivery is overdue.")
    return CheckResult(
        "overdue_deliveries",
        Status.CRITICAL,
        f"{overdue['count']} queued {plural(overdue['count'], 'delivery', 'deliveries')} overdue, the "
        f"oldest due since {overdue['oldest']:%Y-%m-%d %H:%M:%S %Z}: are the workers running?",
    )


def failure_rate() -> CheckResult:
    # Answered by the received_at index: only the last hour's rows are read.
    counts = WebhookDelivery.objects.filter(received_at__gte=now() - FAILURE_RATE_WINDOW).aggregate(
        all=Count("pk"), failed=Count("pk", filter=Q(status__in=FAILED_OUTCOMES))
    )
    if not counts["all"]:
        return CheckResult("failure_rate", Status.OK, "No deliveries in the last hour.")
    rate = counts["failed"] / counts["all"]
    detail = f"{counts['failed']} of {counts['all']} deliveries in the last hour failed ({rate:.1%})."
    return CheckResult(
        "failure_rate", Status.WARNING if rate > conf.HEALTH_FAILURE_RATE else Status.OK, detail
    )


def silent_connections() -> CheckResult:
    """Connections that received events once and none for longer than their threshold."""
    heard, silent, first = silence(now())
    if not silent:
        return CheckResult("silent_connections", Status.OK, f"No connection silent ({heard} heard from).")
    shown = [f"{connector} / {owner} (since {last:%Y-%m-%d %H:%M %Z})" for connector, owner, last in first]
    more = f" and {silent - len(shown)} more" if silent > len(shown) else ""
    return CheckResult(
        "silent_connections",
        Status.WARNING,
        f"{silent} {plural(silent, 'connection', 'connections')} silent: {', '.join(shown)}{more}.",
    )


def silence(current: datetime) -> tuple[int, int, list[tuple[str, str, datetime]]]:
    """How many connections were heard from, how many of them are silent, and the first SHOWN
    silent ones (connector, owner, last event), in one statement whose only rows are those.

    Each connection's newest delivery is read once, from the (connector_id, owner_id,
    received_at) index, in a materialised CTE: referred to by the verdict and the output alike,
    a plain subquery would be evaluated once for each. Only the counts and a few rows reach
    Python: with ten thousand connections, building a row for each costs more than the query."""
    received_at = WebhookDelivery._meta.get_field("received_at")
    cutoffs = [
        When(Q(connector_id=connector, owner_id=owner), then=Value(cutoff(current, seconds)))
        for connector, owner, seconds in overrides()
    ]
    heard = Connection.objects.annotate(
        last_event_at=Connection.last_event(),
        silent_before=Case(
            *cutoffs, default=Value(cutoff(current, conf.SILENCE_THRESHOLD)), output_field=received_at
        ),
    ).values("connector_id", "owner_id", "last_event_at", "silent_before")
    database = connections[router.db_for_read(Connection)]
    sql, params = heard.query.get_compiler(connection=database).as_sql()
    with database.cursor() as cursor:
        cursor.execute(
            f"""
            WITH heard AS MATERIALIZED ({sql})
            SELECT counts.heard, counts.silent, first.connector_id, first.owner_id, first.last_event_at
            FROM (SELECT COUNT(last_event_at) AS heard,
                         SUM(CASE WHEN last_event_at < silent_before THEN 1 ELSE 0 END) AS silent
                  FROM heard) AS counts
            LEFT JOIN (SELECT connector_id, owner_id, last_event_at FROM heard
                       WHERE last_event_at < silent_before
                       ORDER BY connector_id, owner_id LIMIT {SHOWN}) AS first ON 1 = 1
            """,
            params,
        )
        rows = cursor.fetchall()
    converters = database.ops.get_db_converters(Col(WebhookDelivery._meta.db_table, received_at))
    first = [
        (connector, owner, convert(last, converters, database))
        for _heard, _silent, connector, owner, last in rows
        if connector is not None
    ]
    return int(rows[0][0]), int(rows[0][1] or 0), first


def convert(value: Any, converters: list[Any], database: Any) -> datetime:
    """A timestamp as the database's driver gave it (SQLite: text), as Django reads a field."""
    for converter in converters:
        value = converter(value, None, database)
    return value  # type: ignore[no-any-return]


def overrides() -> list[tuple[str, str, float]]:
    return [
        (*name.split("/", 1), seconds)  # type: ignore[misc]
        for name, seconds in conf.SILENCE_OVERRIDES.items()
        if "/" in name
    ]


# Before when a connection whose check is off (threshold 0) would be silent: never. A date, not
# NULL, so that every branch of the SQL CASE is a timestamp.
NEVER = datetime.min.replace(tzinfo=timezone.utc)


def cutoff(current: datetime, seconds: float) -> datetime:
    """Before when a connection's last event makes it silent."""
    return current - timedelta(seconds=seconds) if seconds > 0 else NEVER


def is_silent(threshold: float, last_event_at: datetime, current: datetime) -> bool:
    """The admin overview's verdict for one connection, ``threshold`` its silence_threshold(): the
    one silence() gives in SQL."""
    return threshold > 0 and last_event_at < current - timedelta(seconds=threshold)


def silence_threshold(connector_id: str, owner_id: str) -> float:
    """Seconds without events after which a connection is silent; 0: never."""
    return conf.SILENCE_OVERRIDES.get(f"{connector_id}/{owner_id}", conf.SILENCE_THRESHOLD)


def connection_syncs() -> CheckResult:
    """Connections whose last sync failed, or is older than SYNC_MAX_AGE (when set); connections
    never synced are left alone: not every project syncs. Counted in SQL, and only the connections
    a detail names are read: a health check must not build a row per connection."""
    # A sync still running, or one that died unrecorded, counts from when it started.
    synced = Connection.objects.filter(last_sync_started_at__isnull=False).alias(
        synced_at=Coalesce("last_sync_finished_at", "last_sync_started_at")
    )
    failed = synced.filter(last_sync_outcome=SyncOutcome.FAILED)
    too_old = Q(synced_at__lt=now() - timedelta(seconds=conf.SYNC_MAX_AGE))
    stale = synced.filter(too_old) if conf.SYNC_MAX_AGE > 0 else synced.none()
    counted = {"stale": Count("pk", filter=too_old)} if conf.SYNC_MAX_AGE > 0 else {}
    counts = {
        "stale": 0,
        **synced.aggregate(
            synced=Count("pk"), failed=Count("pk", filter=Q(last_sync_outcome=SyncOutcome.FAILED)), **counted
        ),
    }
    problems = []
    if counts["failed"]:
        problems.append(f"last sync failed: {named(failed, counts['failed'])}")
    if counts["stale"]:
        problems.append(f"last sync older than {conf.SYNC_MAX_AGE:g} s: {named(stale, counts['stale'])}")
    if not problems:
        return CheckResult("connection_syncs", Status.OK, f"{counts['synced']} synced connections in order.")
    return CheckResult("connection_syncs", Status.WARNING, "; ".join(problems) + ".")


def named(connections: QuerySet[Connection], count: int) -> str:
    """The first SHOWN of ``connections`` by name, and how many more there are."""
    first = connections.order_by("connector_id", "owner_id").values_list("connector_id", "owner_id")[:SHOWN]
    names = [f"{connector} / {owner}" for connector, owner in first]
    return ", ".join(names) + (f" and {count - len(names)} more" if count > len(names) else "")


CHECKS: list[Callable[[], CheckResult]] = [
    database,
    dead_deliveries,
    overdue_deliveries,
    failure_rate,
    silent_connections,
    connection_syncs,
]


def run_checks() -> Report:
    """Run every check; without a database the others cannot tell anything, so they are skipped."""
    reachable = database()
    if reachable.status != Status.OK:
        return Report([reachable])
    results = [reachable]
    for check in CHECKS[1:]:
        try:
            results.append(check())
        except DatabaseError as exc:
            results.append(CheckResult(check.__name__, Status.CRITICAL, f"{type(exc).__name__}: {exc}"))
    return Report(results)


def plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many
