"""After a soak run: the database, checked against the plan and against what the server answered.

Imported only once Django is set up with ``soak.settings`` (it imports models).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from django.db import connection

from example_project.stage_history.models import DELETED, StageChange
from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery
from soak.plan import Event, KeyId, OpportunityId, Plan
from soak.signal_log.models import SignalRecord

OUTCOMES = ("processed", "duplicate", "stale", "ignored")
# How many examples of a failure to print; the rest are counted.
SHOWN = 5


@dataclass(frozen=True)
class Answer:
    """What one request got back."""

    http_status: int  # 0 when there was no HTTP answer (connection error, timeout)
    outcome: str  # the body's "status" (or "error"), or the exception's name
    seconds: float
    finished: float = 0.0  # time.monotonic() when the answer was read

    @property
    def ok(self) -> bool:
        return self.http_status == 200 and self.outcome in OUTCOMES


@dataclass
class Check:
    name: str
    failures: list[str] = field(default_factory=list)
    # How many failures there were in all; only the first SHOWN are kept in ``failures``.
    count: int = 0

    @property
    def ok(self) -> bool:
        return self.count == 0

    def fail(self, message: str) -> None:
        self.count += 1
        if len(self.failures) < SHOWN:
            self.failures.append(message)


@dataclass
class Verification:
    checks: list[Check]
    signals: Counter[str]
    max_signals_per_key: int
    signals_per_worker: Counter[int]
    failed_deliveries: Counter[str]
    database: dict[str, int]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def verify(plan: Plan, answers: list[list[Answer]]) -> Verification:
    """``answers[i]`` holds every attempt at ``plan.sends[i]`` (more than one after a retry)."""
    events = {event.key: event for event in plan.events}
    # Per key, the outcomes of its 200 answers; and how many HTTP answers of any kind it had.
    replies: dict[KeyId, list[str]] = defaultdict(list)
    answered: Counter[KeyId] = Counter()
    for position, attempts in enumerate(answers):
        key = plan.events[plan.sends[position]].key
        replies[key] += [attempt.outcome for attempt in attempts if attempt.ok]
        answered[key] += sum(1 for attempt in attempts if attempt.http_status)
    # What each key was answered when it was not a duplicate: its fate.
    fate = {key: next((o for o in outcomes if o != "duplicate"), None) for key, outcomes in replies.items()}

    signals = list(SignalRecord.objects.order_by("pk"))
    checks = [
        _check_answers(answers),
        _check_replies(events, replies),
        *_check_keys(events, replies, fate),
        _check_opportunities(plan),
        _check_newest_applied(plan, fate),
        _check_request_log(answers, answered),
        *_check_signals(events, fate, signals, plan),
        _check_stage_history(events, signals),
    ]
    per_key = Counter((s.connector_id, s.owner_id, s.idempotency_key) for s in signals)
    failed = Counter(
        (error.strip().splitlines() or ["?"])[-1][:200]
        for error in WebhookDelivery.objects.filter(status="failed").values_list("error", flat=True)
    )
    return Verification(
        checks=checks,
        signals=Counter(s.signal for s in signals),
        max_signals_per_key=max(per_key.values(), default=0),
        signals_per_worker=Counter(s.worker_pid for s in signals),
        failed_deliveries=failed,
        database=_database_stats(),
    )


def _check_answers(answers: list[list[Answer]]) -> Check:
    check = Check("every request answered 200 with a known status (zero 5xx)")
    for attempts in answers:
        for attempt in attempts:
            if not attempt.ok:
                check.fail(f"HTTP {attempt.http_status or '-'} {attempt.outcome}")
    return check


def _check_replies(events: dict[KeyId, Event], replies: dict[KeyId, list[str]]) -> Check:
    check = Check('each event answered once as new, every re-send "duplicate"')
    for key, event in events.items():
        outcomes = replies.get(key, [])
        new = [outcome for outcome in outcomes if outcome != "duplicate"]
        allowed = ("ignored",) if event.state is None else ("processed", "stale")
        if len(new) != 1 or new[0] not in allowed:
            check.fail(f"{_key(key)} ({event.type}) answered {outcomes}")
    return check


def _check_keys(
    events: dict[KeyId, Event], replies: dict[KeyId, list[str]], fate: dict[KeyId, str | None]
) -> list[Check]:
    lost = Check("every event's idempotency key stored exactly once (zero lost)")
    recorded = Check("each key records its outcome and every delivery it had")
    rows = list(
        IdempotencyKey.objects.values_list("connector_id", "owner_id", "key", "outcome", "deliveries")
    )
    stored = {(c, o, k): (outcome, deliveries) for c, o, k, outcome, deliveries in rows}
    if len(stored) != len(rows):
        lost.fail(f"{len(rows) - len(stored)} keys stored more than once")
    for key in events.keys() - stored.keys():
        lost.fail(f"{_key(key)} missing")
    for key in stored.keys() - events.keys():
        lost.fail(f"{_key(key)} stored but never sent")
    for key, (outcome, deliveries) in stored.items():
        if key not in events:
            continue
        if outcome != fate.get(key):
            recorded.fail(f"{_key(key)} stored as {outcome}, answered {fate.get(key)}")
        if deliveries != len(replies.get(key, [])):
            recorded.fail(
                f"{_key(key)} counts {deliveries} deliveries, {len(replies.get(key, []))} answered 200"
            )
    return [lost, recorded]


def _check_opportunities(plan: Plan) -> Check:
    check = Check("every opportunity equals the plan's final state")
    rows = {(o.connector_id, o.owner_id, o.remote_id): o for o in Opportunity.objects.all()}
    for opportunity_id in plan.expected.keys() - rows.keys():
        check.fail(f"{_key(opportunity_id)} missing")
    for opportunity_id in rows.keys() - plan.expected.keys():
        check.fail(f"{_key(opportunity_id)} was never sent")
    for opportunity_id, expected in plan.expected.items():
        row = rows.get(opportunity_id)
        if row is None:
            continue
        actual = {
            "name": row.name,
            "amount": row.amount,
            "currency": row.currency,
            "stage_id": row.stage_id,
            "pipeline_id": row.pipeline_id,
            "crm_owner_id": row.crm_owner_id,
            "raw_resource": row.raw_resource,
            "deleted": row.deleted_at is not None,
            "remote_created_at": row.remote_created_at,
            "remote_updated_at": row.remote_updated_at,
        }
        wrong = [name for name, value in actual.items() if value != getattr(expected, name)]
        if wrong:
            check.fail(
                f"{_key(opportunity_id)}: "
                + ", ".join(f"{name} {actual[name]!r} != {getattr(expected, name)!r}" for name in wrong)
            )
    return check


def _check_newest_applied(plan: Plan, fate: dict[KeyId, str | None]) -> Check:
    # Whatever the arrival order, nothing newer than an opportunity's newest event exists, so it
    # can never be stale.
    check = Check("the newest event of every opportunity was applied")
    for opportunity_id, key in plan.newest.items():
        if fate.get(key) != "processed":
            check.fail(f"{_key(opportunity_id)}: newest event {key[2]} answered {fate.get(key)}")
    return check


def _check_request_log(answers: list[list[Answer]], answered: Counter[KeyId]) -> Check:
    check = Check("one WebhookDelivery per answered request, with the answer given")
    rows = list(
        WebhookDelivery.objects.values_list(
            "connector_id", "owner_id", "idempotency_key", "status", "http_status"
        )
    )
    attempts = [attempt for attempts in answers for attempt in attempts]
    logged = Counter(status if http == 200 else f"HTTP {http}" for *_, status, http in rows)
    given = Counter(
        a.outcome if a.http_status == 200 else f"HTTP {a.http_status}" for a in attempts if a.http_status
    )
    if logged != given:
        check.fail(f"logged {dict(sorted(logged.items()))}, answered {dict(sorted(given.items()))}")
    per_key = Counter((c, o, k) for c, o, k, *_ in rows)
    for key in per_key.keys() | answered.keys():
        if per_key[key] != answered[key]:
            check.fail(f"{_key(key)}: {per_key[key]} logged, {answered[key]} answered")
    return check


def _check_signals(
    events: dict[KeyId, Event], fate: dict[KeyId, str | None], signals: list[SignalRecord], plan: Plan
) -> list[Check]:
    once = Check("one signal per applied event, none for the others (each exactly once)")
    right = Check("each signal is the event's (name, id, updatedAt), sent inside its transaction")
    ordered = Check("per opportunity, signals in updatedAt order; `created` only for the first")

    per_key = Counter((s.connector_id, s.owner_id, s.idempotency_key) for s in signals)
    for key, count in per_key.items():
        if count > 1:
            once.fail(f"{_key(key)} signalled {count} times")
        if fate.get(key) != "processed":
            once.fail(f"{_key(key)} signalled but answered {fate.get(key)}")
    for key, outcome in fate.items():
        if outcome == "processed" and key not in per_key:
            once.fail(f"{_key(key)} answered processed but never signalled")

    by_opportunity: dict[OpportunityId, list[SignalRecord]] = defaultdict(list)
    for record in signals:
        key = (record.connector_id, record.owner_id, record.idempotency_key)
        event = events.get(key)
        if event is None or event.state is None:
            right.fail(f"{_key(key)}: {record.signal} for an event that is not an opportunity's")
            continue
        if (record.signal, record.remote_id, record.remote_updated_at) != (
            f"opportunity_{event.action}",
            event.remote_id,
            event.state.remote_updated_at,
        ):
            right.fail(f"{_key(key)}: {record.signal} {record.remote_id} {record.remote_updated_at}")
        if not record.in_atomic_block:
            right.fail(f"{_key(key)}: {record.signal} sent outside a transaction")
        by_opportunity[event.opportunity].append(record)

    pks = {(o.connector_id, o.owner_id, o.remote_id): o.pk for o in Opportunity.objects.all()}
    for opportunity_id, records in by_opportunity.items():
        times = [record.remote_updated_at for record in records]
        if any(later <= earlier for earlier, later in pairwise(times)):
            ordered.fail(f"{_key(opportunity_id)} applied out of order: {[_time(t) for t in times]}")
        if [record.created for record in records] != [True] + [False] * (len(records) - 1):
            ordered.fail(f"{_key(opportunity_id)} created flags {[record.created for record in records]}")
        if {record.opportunity_pk for record in records} != {pks.get(opportunity_id)}:
            ordered.fail(f"{_key(opportunity_id)} signalled with several instances")
        expected = plan.expected.get(opportunity_id)
        if expected is not None and times[-1] != expected.remote_updated_at:
            ordered.fail(f"{_key(opportunity_id)} last signal {_time(times[-1])} is not the newest event")
    return [once, right, ordered]


def _check_stage_history(events: dict[KeyId, Event], signals: list[SignalRecord]) -> Check:
    # The example's receiver records a StageChange when the stage differs from the last one it
    # recorded; replaying the committed signals in commit order must give the same history.
    check = Check("the example's stage history follows the applied events")
    expected: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for record in signals:
        event = events.get((record.connector_id, record.owner_id, record.idempotency_key))
        if event is None or event.state is None:
            continue
        history = expected[record.opportunity_pk]
        to_stage = DELETED if event.action == "deleted" else event.state.stage_id
        last = history[-1][1] if history else None
        if last != to_stage:
            history.append((last or "", to_stage))
    actual: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for opportunity_pk, from_stage, to_stage in StageChange.objects.order_by("pk").values_list(
        "opportunity_id", "from_stage_id", "to_stage_id"
    ):
        actual[opportunity_pk].append((from_stage, to_stage))
    for opportunity_pk in expected.keys() | actual.keys():
        if expected[opportunity_pk] != actual[opportunity_pk]:
            check.fail(
                f"opportunity #{opportunity_pk}: {actual[opportunity_pk]} != {expected[opportunity_pk]}"
            )
    return check


def _database_stats() -> dict[str, int]:
    # Counters since the database was created, i.e. for this run (plus the checks just made).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit, xact_rollback, deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
        commits, rollbacks, deadlocks = cursor.fetchone()
    return {"commits": commits, "rollbacks": rollbacks, "deadlocks": deadlocks}


def _key(key: tuple[str, str, str]) -> str:
    return "/".join(key)


def _time(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")
