"""What the soak test sends, in which order, and what the database must hold afterwards.

Everything here follows from the seed alone, and the expected final state is computed from the
plan, never from what the server answered: the newest ``updatedAt`` of an opportunity wins. Plans
never give two events of one opportunity the same ``updatedAt``, so the tie rule (docs/guides/events.md) is not
needed to predict the result.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from benchmarks.harness import CONNECTORS, OWNERS, STAGES
from morph_webhooks.testing import morph_headers, opportunity_event, reference, timestamp

SCOPES = [(connector, owner) for connector in CONNECTORS for owner in OWNERS]
CURRENCIES = ("EUR", "USD", "GBP")
PIPELINE = "default"
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)

# (connector, owner, idempotency key): what the app treats as one event.
KeyId = tuple[str, str, str]
# (connector, owner, Morph id): what the app treats as one opportunity.
OpportunityId = tuple[str, str, str]


@dataclass(frozen=True)
class State:
    """An opportunity as one event describes it: what the table holds if that event is the newest."""

    name: str
    amount: Decimal | None
    currency: str
    stage_id: str
    pipeline_id: str
    crm_owner_id: str
    raw_resource: dict[str, Any]
    deleted: bool
    remote_created_at: datetime
    remote_updated_at: datetime


@dataclass(frozen=True)
class Event:
    key: KeyId
    type: str
    remote_id: str
    headers: dict[str, str]
    body: bytes
    # None for an event of another model, which the app answers "ignored".
    state: State | None

    @property
    def action(self) -> str:
        return self.type.partition("::")[2]

    @property
    def opportunity(self) -> OpportunityId:
        return (self.key[0], self.key[1], self.remote_id)


@dataclass(frozen=True)
class Plan:
    events: list[Event]
    # Indices into ``events`` in sending order; an index that appears twice is a re-send.
    sends: list[int]
    expected: dict[OpportunityId, State]
    # The key of each opportunity's newest event: it must be applied whatever the arrival order.
    newest: dict[OpportunityId, KeyId]

    @property
    def resends(self) -> int:
        return len(self.sends) - len(self.events)

    @property
    def ignored(self) -> int:
        return sum(1 for event in self.events if event.state is None)


def build_plan(
    sends: int,
    *,
    seed: int,
    duplicate_ratio: float = 0.3,
    opportunities: int | None = None,
    ignored_ratio: float = 0.01,
    twin_ratio: float = 0.25,
    burst_ratio: float = 0.05,
) -> Plan:
    """``sends`` requests: ``duplicate_ratio`` of them re-send an event already in the plan.

    ``twin_ratio`` of the re-sends go right after their original (Morph retrying a delivery it
    thought timed out), so that both are in flight together and race for the key; the rest land
    anywhere. ``burst_ratio`` of the opportunities have all their events sent back to back in
    random order, so that concurrent workers race to create and update the same row.
    """
    rng = random.Random(seed)
    distinct = sends - round(sends * duplicate_ratio)
    ignored = round(distinct * ignored_ratio)
    opportunity_events = distinct - ignored
    count = opportunities if opportunities is not None else max(1, sends // 10)
    if not 1 <= count <= opportunity_events:
        raise ValueError(f"{count} opportunities need 1 to {opportunity_events} opportunity events")

    # Every opportunity starts with a "created"; the other events are spread at random.
    per_opportunity = [1] * count
    for _ in range(opportunity_events - count):
        per_opportunity[rng.randrange(count)] += 1

    next_key = dict.fromkeys(SCOPES, 0)

    def new_key(scope: tuple[str, str]) -> KeyId:
        # The same key strings recur in every scope: Morph's keys are only unique per connector,
        # so the app must scope them, and a key of one tenant must never mark another's as seen.
        next_key[scope] += 1
        return (*scope, f"evt-{next_key[scope]:06d}")

    events: list[Event] = []
    by_opportunity: list[list[int]] = []
    for number, length in enumerate(per_opportunity):
        # Neighbouring opportunities share a Morph id in different scopes: they are distinct rows.
        scope = SCOPES[number % len(SCOPES)]
        remote_id = str(880_000 + number // 2)
        indices = []
        for event_type, state in _history(rng, remote_id, length):
            indices.append(len(events))
            events.append(
                _opportunity_event(key=new_key(scope), type=event_type, remote_id=remote_id, state=state)
            )
        by_opportunity.append(indices)
    for number in range(ignored):
        scope = rng.choice(SCOPES)
        events.append(_ignored_event(new_key(scope), f"call_{number}"))

    # The order comes from sorting random positions: a re-send placed just after its original
    # (a "twin"), or a burst of one opportunity's events, is a run of nearly equal positions.
    positions = [rng.random() for _ in events]
    for indices in by_opportunity:
        if len(indices) > 1 and rng.random() < burst_ratio:
            start = rng.random()
            for index in indices:
                positions[index] = start + rng.random() * 1e-9
    order = list(enumerate(positions))
    for _ in range(sends - distinct):
        index = rng.randrange(len(events))
        near = rng.random() < twin_ratio
        order.append((index, positions[index] + 1e-12 if near else rng.random()))
    order.sort(key=lambda item: item[1])

    expected: dict[OpportunityId, State] = {}
    newest: dict[OpportunityId, KeyId] = {}
    for indices in by_opportunity:
        last = max((events[index] for index in indices), key=lambda event: _state(event).remote_updated_at)
        expected[last.opportunity] = _state(last)
        newest[last.opportunity] = last.key
    return Plan(events=events, sends=[index for index, _ in order], expected=expected, newest=newest)


def _state(event: Event) -> State:
    assert event.state is not None
    return event.state


def _history(rng: random.Random, remote_id: str, length: int) -> list[tuple[str, State]]:
    """One opportunity's life in the CRM: created, then updates, deletes and restores."""
    created_at = T0 + timedelta(milliseconds=rng.randrange(30 * 86_400_000))
    state = State(
        name=f"Deal {remote_id}",
        amount=_amount(rng),
        currency=rng.choice(CURRENCIES),
        stage_id=rng.choice(STAGES[:3]),
        pipeline_id=PIPELINE,
        crm_owner_id=f"user_{rng.randrange(20)}",
        raw_resource={},
        deleted=False,
        remote_created_at=created_at,
        remote_updated_at=created_at,
    )
    history = [("crmOpportunity::created", _with_raw(state, remote_id))]
    for _ in range(length - 1):
        # At least 1 ms apart: no two events of one opportunity share an updatedAt.
        updated_at = state.remote_updated_at + timedelta(milliseconds=rng.randint(1, 6 * 3_600_000))
        if state.deleted:
            # A newer "updated" or "created" after a delete restores the row; a second delete
            # changes nothing visible but is still newer, so it is applied.
            action = rng.choices(("updated", "created", "deleted"), weights=(6, 3, 1))[0]
        else:
            action = rng.choices(("updated", "deleted"), weights=(9, 1))[0]
        changes: dict[str, Any] = {"remote_updated_at": updated_at, "deleted": action == "deleted"}
        if action != "deleted":
            # A delete describes the resource as it was; updates move the stage and the amount.
            if rng.random() < 0.5:
                changes["stage_id"] = rng.choice(STAGES)
            if rng.random() < 0.5:
                changes["amount"] = _amount(rng)
            if rng.random() < 0.1:
                changes["name"] = f"Deal {remote_id} v{rng.randrange(1000)}"
        state = replace(state, **changes)
        history.append((f"crmOpportunity::{action}", _with_raw(state, remote_id)))
    return history


def _amount(rng: random.Random) -> Decimal | None:
    # Sometimes no amount (Morph sends null, which clears the column).
    return None if rng.random() < 0.03 else Decimal(rng.randrange(0, 50_000_000)) / 100


def _with_raw(state: State, remote_id: str) -> State:
    # The CRM's own representation, which the app stores as it is; it differs per version.
    raw = {
        "id": remote_id,
        "properties": {
            "dealname": state.name,
            "dealstage": state.stage_id,
            "amount": None if state.amount is None else str(state.amount),
            "hs_lastmodifieddate": timestamp(state.remote_updated_at),
        },
        "archived": state.deleted,
    }
    return replace(state, raw_resource=raw)


def _json_amount(amount: Decimal | None, variant: int) -> Any:
    # Morph documents a string and sends a number; send both shapes.
    if amount is None:
        return None
    if variant % 5 == 0:
        return str(amount)
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _opportunity_event(*, key: KeyId, type: str, remote_id: str, state: State) -> Event:
    fields = {
        "name": state.name,
        "amount": _json_amount(state.amount, int(key[2].rpartition("-")[2])),
        "currency": state.currency,
        "stage": reference("crmStage", state.stage_id),
        "pipeline": reference("crmPipeline", state.pipeline_id),
        "owner": reference("genericUser", state.crm_owner_id),
        "contacts": [reference("genericContact", f"contact_{remote_id}")],
        "companies": [reference("genericCompany", f"company_{remote_id}")],
        "engagements": [],
    }
    payload = opportunity_event(
        type.partition("::")[2],
        remote_id,
        updated_at=state.remote_updated_at,
        created_at=state.remote_created_at,
        fields=fields,
        rawResource=state.raw_resource,
    )
    return Event(
        key=key,
        type=type,
        remote_id=remote_id,
        headers=morph_headers(key[2], connector_id=key[0], owner_id=key[1]),
        body=json.dumps(payload, separators=(",", ":")).encode(),
        state=state,
    )


def _ignored_event(key: KeyId, remote_id: str) -> Event:
    # A well-formed event of a Morph model the app does not mirror (a call in a telephony app):
    # answered "ignored", key recorded.
    payload = {
        "event": "telephonyCall::created",
        "data": {
            "object": "resource",
            "model": "telephonyCall",
            "id": remote_id,
            "fields": {"direction": "inbound"},
        },
    }
    return Event(
        key=key,
        type="telephonyCall::created",
        remote_id=remote_id,
        headers=morph_headers(key[2], connector_id=key[0], owner_id=key[1]),
        body=json.dumps(payload, separators=(",", ":")).encode(),
        state=None,
    )
