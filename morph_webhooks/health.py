"""The health check: what an operator's monitoring asks of the app, for the ``health/`` view and the
``morph_webhooks_health`` command.

Morph shows its users no delivery dashboard and sends no alerts, so these checks are the only way a
team learns that events stopped arriving, pile up in a queue or die. Each check runs one query that
an index answers whatever the size of the request log, so that a load balancer may call it often.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from django.db import DatabaseError, connections, router
from django.db.models import Count, Min, Q
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
    connections = Connection.objects.only("connector_id", "owner_id").annotate(
        last_event_at=Connection.last_event()
    )
    # Filtered here, not in SQL: a WHERE on the annotation would run each subquery twice.
    heard = [
        connection
        for connection in connections.order_by("connector_id", "owner_id")
        if connection.last_event_at is not None
    ]
    current = now()
    silent = [
        f"{connection} (since {connection.last_event_at:%Y-%m-%d %H:%M %Z})"
        for connection in heard
        if is_silent(connection, connection.last_event_at, current)
    ]
    if not silent:
        return CheckResult(
            "silent_connections", Status.OK, f"No connection silent ({len(heard)} heard from)."
        )
    return CheckResult(
        "silent_connections",
        Status.WARNING,
        f"{len(silent)} {plural(len(silent), 'connection', 'connections')} silent: {listed(silent)}.",
    )


def is_silent(connection: Connection, last_event_at: datetime, current: datetime) -> bool:
    # The admin overview judges each connection by this too.
    threshold = silence_threshold(connection.connector_id, connection.owner_id)
    return threshold > 0 and last_event_at < current - timedelta(seconds=threshold)


def silence_threshold(connector_id: str, owner_id: str) -> float:
    """Seconds without events after which a connection is silent; 0: never."""
    return conf.SILENCE_OVERRIDES.get(f"{connector_id}/{owner_id}", conf.SILENCE_THRESHOLD)


def connection_syncs() -> CheckResult:
    """Connections whose last sync failed, or is older than SYNC_MAX_AGE (when set); connections
    never synced are left alone: not every project syncs."""
    synced = list(
        Connection.objects.filter(last_sync_started_at__isnull=False)
        .only(
            "connector_id", "owner_id", "last_sync_started_at", "last_sync_finished_at", "last_sync_outcome"
        )
        .order_by("connector_id", "owner_id")
    )
    failed = [str(connection) for connection in synced if connection.last_sync_outcome == SyncOutcome.FAILED]
    stale: list[str] = []
    if conf.SYNC_MAX_AGE > 0:
        cutoff = now() - timedelta(seconds=conf.SYNC_MAX_AGE)
        # A sync still running, or one that died unrecorded, counts from when it started.
        stale = [
            str(connection)
            for connection in synced
            if (connection.last_sync_finished_at or connection.last_sync_started_at) < cutoff  # type: ignore[operator]
        ]
    problems = [f"last sync failed: {listed(failed)}"] if failed else []
    problems += [f"last sync older than {conf.SYNC_MAX_AGE:g} s: {listed(stale)}"] if stale else []
    if not problems:
        return CheckResult("connection_syncs", Status.OK, f"{len(synced)} synced connections in order.")
    return CheckResult("connection_syncs", Status.WARNING, "; ".join(problems) + ".")


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


def listed(names: list[str]) -> str:
    more = len(names) - SHOWN
    return ", ".join(names[:SHOWN]) + (f" and {more} more" if more > 0 else "")
