"""Every mirrored Morph model gets the guarantees the opportunity has: the same tests, one
parametrisation per model of the registry."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from morph_webhooks.intake import run_delivery
from morph_webhooks.models import (
    Contact,
    CrmUser,
    Engagement,
    IdempotencyKey,
    Opportunity,
    Pipeline,
    Stage,
    WebhookDelivery,
    Workspace,
)
from morph_webhooks.reprocess import reprocess_delivery
from morph_webhooks.resources.base import ResourceSpec
from morph_webhooks.resources.registry import REGISTRY
from morph_webhooks.signals import opportunity_stage_changed
from morph_webhooks.testing import morph_headers, post_event, reference, resource_event
from tests.helpers import T0, postgresql_only, statements


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
    "crmEngagement": Sample(
        {
            "type": "Call",
            "direction": "outbound",
            "status": "inProgress",
            "title": "Renewal call",
            "startedAt": "2025-03-06T09:00:00.000Z",
            "duration": 300,
            "owner": reference("genericUser", "u1"),
            "users": [reference("genericUser", "u2"), "u3"],
            "companies": [reference("genericCompany", "c1")],
            "contacts": ["p1"],
            "opportunities": [reference("crmOpportunity", "o1")],
        },
        {
            "title": "Renewal call",
            "type": "call",
            "direction": "outbound",
            "status": "inProgress",
            "started_at": T0,
            "duration": 300,
            "crm_owner_id": "u1",
            "user_ids": ["u2", "u3"],
            "company_ids": ["c1"],
            "contact_ids": ["p1"],
            "opportunity_ids": ["o1"],
        },
        {"status": "completed", "duration": 420, "contacts": None},
        {
            "title": "Renewal call",
            "type": "call",
            "direction": "outbound",
            "status": "completed",
            "started_at": T0,
            "duration": 420,
            "crm_owner_id": "u1",
            "user_ids": ["u2", "u3"],
            "company_ids": ["c1"],
            "contact_ids": [],
            "opportunity_ids": ["o1"],
        },
        ("type", "visit"),
    ),
    "genericWorkspace": Sample(
        {"name": "Sales"}, {"name": "Sales"}, {"name": "Sales EU"}, {"name": "Sales EU"}, ("name", "")
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("known_connection")
def test_statements_per_event_are_the_opportunitys(send, spec, sample):
    with statements() as new:
        send(event(spec, "created", 0, sample.fields), key="k1")
    with statements() as duplicate:
        send(event(spec, "created", 0, sample.fields), key="k1")

    # key claim (with PostgreSQL's SET LOCAL lock_timeout), row lock, row write, the pairs of each
    # list the sample fills (one INSERT each, all in one statement on PostgreSQL), delivery log; a
    # duplicate: the first and last
    sources = {
        field.source for name, field in spec.fields._declared_fields.items() if sample.fields.get(name)
    }
    filled = [link for link in spec.links if link.column in sources]
    pairs = min(len(filled), 1) if connection.vendor == "postgresql" else len(filled)
    assert (len(new), len(duplicate)) == (4 + pairs, 2)


@pytest.mark.django_db(transaction=True)
@postgresql_only
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


def expanded(model: str, remote_id: str, minutes: int | None, **fields: Any) -> dict[str, Any]:
    """A reference sent as the resource itself; ``minutes`` None: without timestamps."""
    body = {"object": "resource", "model": model, "id": remote_id, "fields": fields}
    if minutes is not None:
        stamp = resource_event(model, updated_at=T0 + timedelta(minutes=minutes))["data"]["updatedAt"]
        body |= {"createdAt": stamp, "updatedAt": stamp}
    return body


def deal(minutes: int, **fields: Any) -> dict[str, Any]:
    return resource_event(
        "crmOpportunity", "updated", "opp_1", fields=fields, updated_at=T0 + timedelta(minutes=minutes)
    )


@pytest.mark.django_db
class TestExpandedReferences:
    def test_an_expanded_stage_is_stored_with_the_deal_and_sends_its_signal(self, send):
        calls: list[dict[str, Any]] = []
        REGISTRY["crmStage"].signals["created"].connect(
            lambda **kwargs: calls.append(kwargs), weak=False, dispatch_uid="test-expanded"
        )
        try:
            response = send(deal(0, stage=expanded("crmStage", "won", 0, name="Won", type="won")))
        finally:
            REGISTRY["crmStage"].signals["created"].disconnect(dispatch_uid="test-expanded")

        assert response.json() == {"status": "processed"}
        stage = Stage.objects.get()
        assert (stage.remote_id, stage.name, stage.type, stage.connector_id) == (
            "won",
            "Won",
            "WON",
            "hubspot",
        )
        assert Opportunity.objects.get().stage_id == "won"
        [kwargs] = calls
        assert (kwargs["instance"], kwargs["created"]) == (stage, True)
        # The stage consumed no key of its own.
        assert IdempotencyKey.objects.get().remote_id == "opp_1"

    def test_a_list_of_expanded_references_is_stored(self, send):
        stages = [expanded("crmStage", f"s{index}", 0, name=f"Stage {index}") for index in range(3)]
        send(resource_event("crmPipeline", "created", "p1", fields={"name": "Sales", "stages": stages}))

        assert Pipeline.objects.get().stage_ids == ["s0", "s1", "s2"]
        assert sorted(Stage.objects.values_list("name", flat=True)) == ["Stage 0", "Stage 1", "Stage 2"]

    def test_an_expanded_reference_without_timestamps_keeps_only_its_id(self, send):
        response = send(deal(0, stage=expanded("crmStage", "won", None, name="Won")))

        assert response.json() == {"status": "processed"}
        assert Opportunity.objects.get().stage_id == "won" and not Stage.objects.exists()

    def test_an_older_expanded_version_changes_nothing_but_the_deal_applies(self, send):
        send(
            resource_event(
                "crmStage",
                "created",
                "won",
                fields={"name": "Closed won"},
                updated_at=T0 + timedelta(minutes=5),
            )
        )

        response = send(deal(1, name="Acme", stage=expanded("crmStage", "won", 3, name="Old name")))

        assert response.json() == {"status": "processed"}
        assert Stage.objects.get().name == "Closed won"
        assert Opportunity.objects.get().name == "Acme"

    def test_an_invalid_expanded_resource_is_named_and_nothing_is_stored(self, send):
        response = send(deal(0, stage=expanded("crmStage", "won", 0, type="MAYBE")))

        assert response.status_code == 400
        assert list(response.json()["fields"]) == ["data.fields.stage.fields.type"]
        assert not Stage.objects.exists() and not Opportunity.objects.exists()

    @pytest.mark.parametrize("remote_id", [{"a": 1}, [1, 2], "", None, 12.5, "x" * 300])
    def test_an_unusable_id_anywhere_is_named(self, send, remote_id):
        # An extra field without a column: nothing else checks the id of what it expands.
        custom = {**expanded("crmStage", "won", 0, name="Won"), "id": remote_id}

        response = send(deal(0, customRef=custom, stage=expanded("crmStage", "s1", 0)))

        assert response.status_code == 400
        assert list(response.json()["fields"]) == ["data.fields.customRef.id"]
        assert not Stage.objects.exists() and not Opportunity.objects.exists()

    def test_an_expansion_of_no_model_the_app_mirrors_is_kept_as_sent(self, send):
        custom = {**expanded("crmStage", "won", 0), "model": ["crmStage"]}

        response = send(deal(0, customRef=custom))

        assert response.json() == {"status": "processed"}
        assert Opportunity.objects.get().extra_fields == {"customRef": custom} and not Stage.objects.exists()

    def test_a_reference_of_another_model_than_its_fields_is_named(self, send):
        response = send(
            deal(
                0, stage=expanded("genericUser", "u1", 0), companies=["c1", reference("genericContact", "c2")]
            )
        )

        assert response.status_code == 400
        assert list(response.json()["fields"]) == [
            "data.fields.stage.model",
            "data.fields.companies.1.model",
        ]
        assert not CrmUser.objects.exists() and not Opportunity.objects.exists()

    def test_a_copy_of_the_resource_itself_is_not_stored_over_it(self, send):
        send(deal(5, name="Current"))

        # Older than the stored version, carrying a newer copy of itself in an extra field.
        response = send(deal(1, name="Old", customRef=expanded("crmOpportunity", "opp_1", 9, name="Nested")))

        assert response.json() == {"status": "stale"}
        row = Opportunity.objects.get()
        assert (row.name, row.remote_updated_at) == ("Current", T0 + timedelta(minutes=5))

    def test_an_expansion_inside_an_expansion_is_stored_first(self, send):
        pipeline = expanded("crmPipeline", "p1", 0, name="Sales")
        created: list[str] = []
        for model in ("crmPipeline", "crmStage"):
            REGISTRY[model].signals["created"].connect(
                lambda instance, **kwargs: created.append(instance.remote_id),
                weak=False,
                dispatch_uid=f"test-nested-{model}",
            )
        try:
            response = send(deal(0, stage=expanded("crmStage", "won", 0, name="Won", pipeline=pipeline)))
        finally:
            for model in ("crmPipeline", "crmStage"):
                REGISTRY[model].signals["created"].disconnect(dispatch_uid=f"test-nested-{model}")

        assert response.json() == {"status": "processed"}
        assert created == ["p1", "won"]
        assert Pipeline.objects.get().name == "Sales" and Stage.objects.get().pipeline_id == "p1"

    def test_an_invalid_expansion_inside_an_expansion_is_named(self, send):
        pipeline = expanded("crmPipeline", "p1", 0, name="")
        response = send(deal(0, stage=expanded("crmStage", "won", 0, pipeline=pipeline)))

        assert response.status_code == 400
        assert list(response.json()["fields"]) == ["data.fields.stage.fields.pipeline.fields.name"]

    def test_a_duplicate_stores_nothing_again(self, send):
        event = deal(0, stage=expanded("crmStage", "won", 0, name="Won"))
        send(event, key="k1")
        Stage.objects.update(name="renamed here")

        assert send(event, key="k1").json() == {"status": "duplicate"}
        assert Stage.objects.get().name == "renamed here"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("known_connection")
def test_each_expanded_reference_stored_costs_its_lock_and_its_write(send):
    with statements() as sql:
        send(
            deal(0, stage=expanded("crmStage", "won", 0, name="Won"), owner=expanded("genericUser", "u1", 0))
        )

    assert len(sql) == 4 + 2 * 2


@pytest.fixture
def stage_changes() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    opportunity_stage_changed.connect(
        lambda **kwargs: calls.append(kwargs), weak=False, dispatch_uid="test-stage"
    )
    yield calls
    opportunity_stage_changed.disconnect(dispatch_uid="test-stage")


@pytest.mark.django_db
class TestStageChanged:
    def test_sent_with_the_previous_stage_and_the_stage_row(self, send, stage_changes):
        send(resource_event("crmStage", "created", "won", fields={"name": "Closed won", "type": "WON"}))
        send(deal(1, stage="open"))
        send(deal(2, stage="won"))

        first, second = stage_changes
        assert (first["previous_stage_id"], first["stage"]) == ("", None)  # "open" never arrived
        assert second["previous_stage_id"] == "open"
        assert second["stage"] == Stage.objects.get(remote_id="won") and second["stage"].type == "WON"
        assert second["instance"] == Opportunity.objects.get() and second["sender"] is Opportunity
        assert second["event"].remote_updated_at == T0 + timedelta(minutes=2)

    def test_not_sent_when_the_stage_stays(self, send, stage_changes):
        send(deal(1, stage="open"))
        send(deal(2, amount=10))
        send(deal(3, stage="open"))
        send(deal(0, stage="won"))  # stale: nothing applied

        assert [call["stage"] for call in stage_changes] == [None]
        assert len(stage_changes) == 1

    def test_its_stage_is_the_one_the_same_event_carried_expanded(self, send, stage_changes):
        send(deal(1, stage=expanded("crmStage", "won", 1, name="Won", type="WON")))

        [call] = stage_changes
        assert call["stage"].type == "WON"


@pytest.mark.django_db
def test_each_model_has_an_admin_list_and_change_page(admin_client, send, spec, sample):
    send(event(spec, "created", 0, sample.fields))
    row = spec.model._default_manager.get()
    meta = spec.model._meta

    listed = admin_client.get(f"/admin/morph_webhooks/{meta.model_name}/")
    shown = admin_client.get(f"/admin/morph_webhooks/{meta.model_name}/{row.pk}/change/")

    assert listed.status_code == shown.status_code == 200
    first_value = str(next(iter(sample.columns.values())))
    assert first_value in listed.text and first_value in shown.text


@pytest.mark.django_db
class TestEngagement:
    def test_its_type_is_stored_lower_case_whatever_the_case_sent(self, send):
        for index, kind in enumerate(["CALL", "Meeting", "email", "tAsK", "note"]):
            fields = {"type": kind, "startedAt": "2025-03-06T09:00:00Z"}
            assert (
                send(resource_event("crmEngagement", "created", f"e{index}", fields=fields)).status_code
                == 200
            )

        assert sorted(Engagement.objects.values_list("type", flat=True)) == [
            "call",
            "email",
            "meeting",
            "note",
            "task",
        ]

    @pytest.mark.parametrize(
        ("fields", "bad"),
        [
            ({"startedAt": "2025-03-06T09:00:00Z"}, ["data.fields.type"]),
            ({"type": "call"}, ["data.fields.startedAt"]),
            ({"type": None, "startedAt": None}, ["data.fields.type", "data.fields.startedAt"]),
            ({"type": "visit", "startedAt": "2025-03-06T09:00:00Z"}, ["data.fields.type"]),
            ({"type": "call", "startedAt": "yesterday"}, ["data.fields.startedAt"]),
            ({"type": "call", "startedAt": "2025-03-06T09:00:00Z", "duration": -1}, ["data.fields.duration"]),
            ({"type": "call", "startedAt": "2025-03-06T09:00:00Z", "status": "done"}, ["data.fields.status"]),
            (
                {"type": "call", "startedAt": "2025-03-06T09:00:00Z", "direction": "in"},
                ["data.fields.direction"],
            ),
        ],
    )
    def test_morph_requires_a_type_and_a_start_when_it_creates_one(self, send, fields, bad):
        response = send(resource_event("crmEngagement", "created", "e1", fields=fields))

        assert response.status_code == 400
        assert sorted(response.json()["fields"]) == sorted(bad)
        assert not Engagement.objects.exists()

    def test_an_update_may_leave_type_and_start_out(self, send):
        response = send(resource_event("crmEngagement", "updated", "e1", fields={"title": "Follow-up"}))

        assert response.json() == {"status": "processed"}
        assert Engagement.objects.values_list("title", "type", "started_at").get() == ("Follow-up", "", None)

    def test_expanded_references_are_stored_as_their_resources(self, send):
        contact = {
            "object": "resource",
            "model": "genericContact",
            "id": "p1",
            "fields": {"firstName": "Ada"},
            "createdAt": "2025-03-06T09:00:00Z",
            "updatedAt": "2025-03-06T09:00:00Z",
        }
        fields = {"type": "note", "startedAt": "2025-03-06T09:00:00Z", "contacts": [contact]}
        assert send(resource_event("crmEngagement", "created", "e1", fields=fields)).status_code == 200

        assert Engagement.objects.get().contact_ids == ["p1"]
        assert Contact.objects.get(remote_id="p1").first_name == "Ada"


@pytest.mark.django_db
def test_a_workspace_needs_a_name_when_morph_creates_it(send):
    response = send(resource_event("genericWorkspace", "created", "w1", fields={}))

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["data.fields.name"]
    assert not Workspace.objects.exists()


@pytest.mark.django_db
def test_the_engagement_list_filters_by_type_status_direction_and_searches_titles(admin_client, send):
    for remote_id, kind, status, direction, title in [
        ("e1", "call", "completed", "outbound", "Renewal call"),
        ("e2", "call", "planned", "outbound", "Renewal follow-up"),
        ("e3", "meeting", "completed", "outbound", "Renewal meeting"),
        ("e4", "call", "completed", "inbound", "Renewal question"),
        ("e5", "call", "completed", "outbound", "Kick-off"),
    ]:
        fields = {
            "type": kind,
            "status": status,
            "direction": direction,
            "title": title,
            "startedAt": "2025-03-06T09:00:00Z",
        }
        send(resource_event("crmEngagement", "created", remote_id, fields=fields))

    listed = admin_client.get(
        "/admin/morph_webhooks/engagement/",
        {"type__exact": "call", "status__exact": "completed", "direction__exact": "outbound", "q": "renewal"},
    )

    assert listed.status_code == 200
    assert [row.remote_id for row in listed.context["cl"].result_list] == ["e1"]


@pytest.mark.django_db
def test_deferred_mode_queues_and_a_worker_applies_it(send, spec, sample, signals, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred"}
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

    assert send(event(spec, "created", 0, sample.fields)).json() == {"status": "queued"}
    assert not spec.model._default_manager.exists() and signals == []

    assert run_delivery(WebhookDelivery.objects.get().pk) == "processed"
    assert stored(spec, sample) == sample.columns
    assert [action for action, _ in signals] == ["created"]


@pytest.mark.django_db
def test_a_failed_delivery_is_reprocessed(send, spec, sample, signals):
    def boom(**kwargs: Any) -> None:
        raise RuntimeError("receiver down")

    spec.signals["created"].connect(boom, weak=False, dispatch_uid="test-resources-boom")
    try:
        assert send(event(spec, "created", 0, sample.fields)).status_code == 500
    finally:
        spec.signals["created"].disconnect(dispatch_uid="test-resources-boom")
    assert not spec.model._default_manager.exists()

    delivery = WebhookDelivery.objects.get()
    assert reprocess_delivery(delivery).outcome == "processed"
    assert stored(spec, sample) == sample.columns
