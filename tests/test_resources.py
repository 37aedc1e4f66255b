"""Every mirrored Morph model gets the guarantees the opportunity has: the same tests, one
parametrisation per model of the registry."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from morph_webhooks.models import CrmUser, IdempotencyKey, WebhookDelivery
from morph_webhooks.resources.base import ResourceSpec
from morph_webhooks.resources.registry import REGISTRY
from morph_webhooks.testing import morph_headers, post_event, reference, resource_event

T0 = datetime(2025, 3, 6, 9, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Sample:
    """What one model's tests send: full fields and the columns they are stored in, a partial
    update and a field that validation refuses."""

    fields: dict[str, Any]
    columns: dict[str, Any]
    update: dict[str, Any]
    updated_columns: dict[str, Any]
    invalid: tuple[str, Any]


SAMPLES = {
    "crmPipeline": Sample(
        {"name": "Sales", "stages": [reference("crmStage", "s1"), "s2"]},
        {"name": "Sales", "stage_ids": ["s1", "s2"]},
        {"name": "Sales EU"},
        {"name": "Sales EU", "stage_ids": ["s1", "s2"]},
        ("name", ""),
    ),
    "crmStage": Sample(
        {"name": "Closed won", "type": "won", "pipeline": reference("crmPipeline", "p1")},
        {"name": "Closed won", "type": "WON", "pipeline_id": "p1"},
        {"type": "Lost"},
        {"name": "Closed won", "type": "LOST", "pipeline_id": "p1"},
        ("type", "MAYBE"),
    ),
    "genericUser": Sample(
        {"firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com"},
        {"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com"},
        {"email": None},
        {"first_name": "Grace", "last_name": "Hopper", "email": ""},
        ("email", "not an address"),
    ),
    "genericCompany": Sample(
        {"name": "Acme Corp"},
        {"name": "Acme Corp"},
        {"name": "Acme Corporation"},
        {"name": "Acme Corporation"},
        ("name", "x" * 251),
    ),
    "genericContact": Sample(
        {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com", "phone": "+44 20 7946"},
        {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "+44 20 7946"},
        {"phone": "+44 20 7946 0001"},
        {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
            "phone": "+44 20 7946 0001",
        },
        ("phone", "1234"),
    ),
}
RELATED = sorted(SAMPLES)


def test_every_registered_model_but_the_opportunity_has_a_sample() -> None:
    # The opportunity has tests of its own; a new model must come with its sample here.
    assert set(REGISTRY) - {"crmOpportunity"} == set(SAMPLES)


@pytest.fixture(params=RELATED)
def spec(request: pytest.FixtureRequest) -> ResourceSpec:
    return REGISTRY[request.param]


@pytest.fixture
def sample(spec: ResourceSpec) -> Sample:
    return SAMPLES[spec.morph_model]


@pytest.fixture
def signals(spec: ResourceSpec) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def recorder(action: str) -> Any:
        return lambda **kwargs: calls.append((action, kwargs))

    receivers = {action: recorder(action) for action in spec.signals}
    for action, signal in spec.signals.items():
        signal.connect(receivers[action], weak=False, dispatch_uid=f"test-resources-{action}")
    yield calls
    for action, signal in spec.signals.items():
        signal.disconnect(dispatch_uid=f"test-resources-{action}")


def event(
    spec: ResourceSpec, action: str, minutes: int, fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    return resource_event(
        spec.morph_model, action, "r1", fields=fields or {}, updated_at=T0 + timedelta(minutes=minutes)
    )


def stored(spec: ResourceSpec, sample: Sample) -> dict[str, Any]:
    row = spec.model._default_manager.get(remote_id="r1")
    return {name: getattr(row, name) for name in sample.columns}


@pytest.mark.django_db
class TestOrdering:
    def test_created_then_duplicate_is_applied_once(self, send, spec, sample, signals):
        first = send(event(spec, "created", 0, sample.fields), key="k1")
        again = send(event(spec, "created", 0, sample.fields), key="k1")

        assert (first.json(), again.json()) == ({"status": "processed"}, {"status": "duplicate"})
        assert stored(spec, sample) == sample.columns
        [(action, kwargs)] = signals
        assert (action, kwargs["sender"], kwargs["created"]) == ("created", spec.model, True)
        assert kwargs["instance"].remote_id == "r1" and kwargs["event"].spec is spec
        assert IdempotencyKey.objects.get().deliveries == 2

    def test_a_partial_update_changes_only_what_it_carries(self, send, spec, sample, signals):
        send(event(spec, "created", 0, sample.fields))
        response = send(event(spec, "updated", 1, sample.update))

        assert response.json() == {"status": "processed"}
        assert stored(spec, sample) == sample.updated_columns
        assert [action for action, _ in signals] == ["created", "updated"]

    def test_older_and_equal_updates_are_stale(self, send, spec, sample, signals):
        send(event(spec, "created", 5, sample.fields))

        assert send(event(spec, "updated", 4, sample.update)).json() == {"status": "stale"}
        assert send(event(spec, "updated", 5, sample.update)).json() == {"status": "stale"}
        assert stored(spec, sample) == sample.columns
        assert [action for action, _ in signals] == ["created"]

    def test_delete_is_soft_and_only_a_newer_event_restores(self, send, spec, sample, signals):
        send(event(spec, "created", 0, sample.fields))
        # At the same updatedAt: CRMs do not always bump it when deleting.
        assert send(event(spec, "deleted", 0)).json() == {"status": "processed"}
        row = spec.model._default_manager.get()
        assert row.is_deleted and spec.model._default_manager.alive().count() == 0

        assert send(event(spec, "updated", -1, sample.update)).json() == {"status": "stale"}
        assert send(event(spec, "updated", 1, sample.update)).json() == {"status": "processed"}
        assert not spec.model._default_manager.get().is_deleted
        assert [action for action, _ in signals] == ["created", "deleted", "updated"]

    def test_invalid_field_is_400_naming_it_and_stores_nothing(self, send, spec, sample):
        name, value = sample.invalid
        response = send(event(spec, "created", 0, {**sample.fields, name: value}))

        assert response.status_code == 400
        assert list(response.json()["fields"]) == [f"data.fields.{name}"]
        assert not spec.model._default_manager.exists() and not IdempotencyKey.objects.exists()
        assert WebhookDelivery.objects.get().status == "rejected"

    def test_unknown_fields_are_merged_into_extra_fields(self, send, spec, sample):
        send(event(spec, "created", 0, {**sample.fields, "hs_region": "EU"}))
        send(event(spec, "updated", 1, {"hs_tier": 2}))

        assert spec.model._default_manager.get().extra_fields == {"hs_region": "EU", "hs_tier": 2}


def test_stage_types_are_stored_upper_case_whatever_the_case_sent(send, db):
    for index, kind in enumerate(["open", "Won", "LOST", "unknown"]):
        send(resource_event("crmStage", "created", f"s{index}", fields={"type": kind}))

    assert sorted(REGISTRY["crmStage"].model._default_manager.values_list("type", flat=True)) == [
        "LOST",
        "OPEN",
        "UNKNOWN",
        "WON",
    ]


def test_a_crm_user_is_named_by_its_name_or_email(db):
    assert str(CrmUser(first_name="Grace", last_name="Hopper")) == "Grace Hopper"
    assert str(CrmUser(email="g@example.com", remote_id="u1")) == "g@example.com"
    assert str(CrmUser(remote_id="u1")) == "u1"


@contextmanager
def statements() -> Iterator[list[str]]:
    captured: list[str] = []
    with CaptureQueriesContext(connection) as context:
        yield captured
    captured.extend(q["sql"] for q in context.captured_queries if q["sql"].upper() not in ("BEGIN", "COMMIT"))


@pytest.mark.django_db(transaction=True)
def test_statements_per_event_are_the_opportunitys(send, spec, sample):
    lock_timeout = 1 if connection.vendor == "postgresql" else 0
    with statements() as new:
        send(event(spec, "created", 0, sample.fields), key="k1")
    with statements() as duplicate:
        send(event(spec, "created", 0, sample.fields), key="k1")

    # redelivery check, row lock, key claim, row write, delivery log; a duplicate: the first and last
    assert (len(new), len(duplicate)) == (lock_timeout + 5, lock_timeout + 2)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (DATABASE_URL)")
def test_concurrent_events_for_one_resource_keep_the_newest(spec, sample, signals):
    # Shuffled versions from many threads at once: the newest wins, each key is applied once.
    versions = [(event(spec, "updated", minutes, {**sample.fields}), f"k{minutes}") for minutes in range(12)]
    versions = versions[::2] + versions[1::2]
    workers = 6
    barrier = threading.Barrier(workers)

    def deliver(chunk: list[tuple[dict[str, Any], str]]) -> list[str]:
        client = Client()
        try:
            barrier.wait()
            return [
                post_event(client, payload, headers=morph_headers(key)).json()["status"]
                for payload, key in chunk
            ]
        finally:
            connection.close()

    with ThreadPoolExecutor(workers) as pool:
        statuses = Counter(
            status
            for answers in pool.map(deliver, [versions[i::workers] for i in range(workers)])
            for status in answers
        )

    assert statuses["processed"] >= 1 and statuses["processed"] + statuses["stale"] == 12
    row = spec.model._default_manager.get()
    assert row.remote_updated_at == T0 + timedelta(minutes=11)
    assert len(signals) == statuses["processed"]
