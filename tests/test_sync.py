"""morph_webhooks_sync against the fake Morph API, over real HTTP."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from signal import SIGTERM
from typing import Any

import django
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection as db_connection
from django.db.models.signals import pre_save
from django.test import Client
from django.utils import timezone

from morph_webhooks import api as morph_api
from morph_webhooks import signals
from morph_webhooks.deferred import sync_connection_task
from morph_webhooks.models import (
    Connection,
    Contact,
    Engagement,
    IdempotencyKey,
    Opportunity,
    Stage,
    SyncLeaseLost,
    WebhookDelivery,
    Workspace,
)
from morph_webhooks.sync import ModelSync, models_to_sync, sync_connection
from morph_webhooks.testing import (
    engagement_event,
    morph_headers,
    opportunity_event,
    post_event,
    reference,
    resource_event,
)
from morph_webhooks.testing.fake_api import FakeMorphAPI
from tests.helpers import T0, postgresql_only, raising_receiver, statements

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
CONNECTOR, OWNER = "hubspot", "tenant_1"
OPPORTUNITIES = "crmOpportunity"
# A re-synced page where nothing changed: its versions read (locked), its rows marked seen, the
# next cursor saved; in a test's transaction, a savepoint and its release besides.
PAGE_STATEMENTS = 5


def deal(remote_id: str, minutes: int = 0, **fields: Any) -> dict[str, Any]:
    event = opportunity_event(remote_id=remote_id, updated_at=T0 + timedelta(minutes=minutes))
    event["data"]["fields"] |= fields
    return event["data"]


@pytest.fixture
def fake_api(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMorphAPI]:
    monkeypatch.setattr(morph_api, "BACKOFF", 0.01)
    with FakeMorphAPI() as api:
        settings.MORPH_WEBHOOKS = {
            **settings.MORPH_WEBHOOKS,
            "API_URL": api.url,
            "API_KEY": api.key,
            "API_SECRET": api.secret,
            "API_PAGE_SIZE": 2,
            "API_RETRIES": 2,
            "API_TIMEOUT": 5.0,
        }
        yield api


@pytest.fixture
def deals(fake_api: FakeMorphAPI) -> FakeMorphAPI:
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1"), deal("opp_2"), deal("opp_3")])
    return fake_api


@pytest.fixture
def received() -> Iterator[list[tuple[str, Any]]]:
    calls: list[tuple[str, Any]] = []
    by_action = {
        "created": signals.opportunity_created,
        "updated": signals.opportunity_updated,
        "deleted": signals.opportunity_deleted,
    }
    for action, signal in by_action.items():
        signal.connect(
            lambda action=action, **kwargs: calls.append((action, kwargs["event"])),
            weak=False,
            dispatch_uid=f"test-sync-{action}",
        )
    yield calls
    for action, signal in by_action.items():
        signal.disconnect(dispatch_uid=f"test-sync-{action}")


def sync(*args: str) -> str:
    out = io.StringIO()
    call_command("morph_webhooks_sync", *args, stdout=out, stderr=out)
    return out.getvalue()


def sync_tenant(*args: str) -> str:
    return sync("--connector", CONNECTOR, "--owner", OWNER, "--model", OPPORTUNITIES, *args)


def counts() -> dict[str, int]:
    return Connection.objects.get(connector_id=CONNECTOR, owner_id=OWNER).last_sync_counts[OPPORTUNITIES]


def test_a_first_sync_creates_every_resource(deals, received):
    output = sync_tenant()

    assert sorted(Opportunity.objects.values_list("remote_id", flat=True)) == ["opp_1", "opp_2", "opp_3"]
    assert [action for action, _ in received] == ["created"] * 3
    assert {(event.source, event.idempotency_key, event.action) for _, event in received} == {
        ("sync", "", "created")
    }
    # No key consumed, no request logged per resource: the run is recorded once.
    assert not IdempotencyKey.objects.exists() and not WebhookDelivery.objects.exists()
    connection = Connection.objects.get()
    assert (connection.last_sync_outcome, connection.last_sync_error, connection.cursors) == (
        "succeeded",
        "",
        {},
    )
    assert connection.last_sync_started_at <= connection.last_sync_finished_at
    assert counts() == {"created": 3, "updated": 0, "unchanged": 0, "stale": 0, "deleted": 0, "failed": 0}
    assert "crmOpportunity: 2 pages, 3 resources: 3 created" in output
    assert [(request.cursor is None, request.limit) for request in deals.requests] == [(True, 2), (False, 2)]


def test_every_model_is_synced_related_ones_first(fake_api):
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1")])
    fake_api.add(
        CONNECTOR,
        OWNER,
        "crmStage",
        [resource_event("crmStage", remote_id="won", fields={"name": "Won"})["data"]],
    )

    sync("--connector", CONNECTOR, "--owner", OWNER)

    assert Stage.objects.get().name == "Won" and Opportunity.objects.get().remote_id == "opp_1"
    asked = list(dict.fromkeys(request.model for request in fake_api.requests))
    assert asked.index("crmStage") < asked.index(OPPORTUNITIES)
    assert asked[0] == "crmPipeline"


def test_a_second_sync_changes_nothing(deals, received):
    sync_tenant()
    received.clear()
    # In a stated order: PostgreSQL returns rows in their order on disk, which marking them synced
    # may change.
    before = list(Opportunity.objects.order_by("remote_id").values_list("remote_id", "updated_at"))

    sync_tenant()

    assert received == []
    assert list(Opportunity.objects.order_by("remote_id").values_list("remote_id", "updated_at")) == before
    assert counts()["unchanged"] == 3 and counts()["created"] == 0


def test_a_changed_resource_is_updated(deals, received):
    sync_tenant()
    received.clear()
    deals.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_2", 5, name="Renamed")])

    sync_tenant()

    assert Opportunity.objects.get(remote_id="opp_2").name == "Renamed"
    assert [(action, event.remote_id) for action, event in received] == [("updated", "opp_2")]
    assert (counts()["updated"], counts()["unchanged"]) == (1, 2)


def test_a_webhook_newer_than_the_apis_copy_wins(deals, send, received):
    assert send(
        opportunity_event(
            "updated", "opp_1", updated_at=T0 + timedelta(minutes=9), fields={"name": "From webhook"}
        )
    ).json() == {"status": "processed"}
    received.clear()

    sync_tenant()

    assert Opportunity.objects.get(remote_id="opp_1").name == "From webhook"
    assert counts()["stale"] == 1
    assert sorted(event.remote_id for _, event in received) == ["opp_2", "opp_3"]


def test_a_rate_limit_is_waited_out_as_morph_asks(deals):
    deals.fail(429, retry_after="1")
    started = time.monotonic()

    sync_tenant()

    assert time.monotonic() - started >= 1
    assert [request.status for request in deals.requests] == [429, 200, 200]
    assert Opportunity.objects.count() == 3


def test_a_retry_after_of_nan_is_waited_out_with_the_backoff(deals):
    deals.fail(429, retry_after="nan")

    sync_tenant()

    assert [request.status for request in deals.requests] == [429, 200, 200]
    assert Opportunity.objects.count() == 3


def test_server_errors_and_timeouts_are_retried(deals, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "API_TIMEOUT": 0.3}
    deals.fail(500, times=2, page=1)
    deals.fail(None, delay=0.6, page=0)

    sync_tenant()

    assert Opportunity.objects.count() == 3
    deadline = time.monotonic() + 5
    while len(deals.requests) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)  # the slow answer is logged once the fake has given it, after the retry's
    first_page, second_page = (
        [request.status for request in deals.requests if (request.cursor is None) == first]
        for first in (True, False)
    )
    # The first page timed out once (its late answer came after the retry's), the second failed twice.
    assert (first_page, second_page) == ([200, 200], [500, 500, 200])


def test_wrong_credentials_stop_with_the_connection_named(deals, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "API_SECRET": "a-wrong-secret-987654"}
    out = io.StringIO()

    with pytest.raises(CommandError) as error:
        call_command(
            "morph_webhooks_sync", "--connector", CONNECTOR, "--owner", OWNER, stdout=out, stderr=out
        )

    message = str(error.value)
    assert "401" in message and "MORPH::UNAUTHORIZED" in message and "Invalid API key or secret" in message
    assert f"connector '{CONNECTOR}', owner '{OWNER}'" in message
    assert len(deals.requests) == 1  # not retried
    connection = Connection.objects.get()
    assert connection.last_sync_outcome == "failed" and "MORPH::UNAUTHORIZED" in connection.last_sync_error
    for text in (message, out.getvalue(), connection.last_sync_error):
        assert "a-wrong-secret-987654" not in text and deals.secret not in text


def test_morphs_error_is_stored_and_shown_cut_short(deals):
    error = {"code": "C" * 2_000_000, "message": "M" * 2_000_000}
    deals.fail(403, body=json.dumps({"error": error}).encode())
    out = io.StringIO()

    with pytest.raises(CommandError) as error:
        call_command(
            "morph_webhooks_sync", "--connector", CONNECTOR, "--owner", OWNER, stdout=out, stderr=out
        )

    stored = Connection.objects.get().last_sync_error
    assert "answered 403" in stored and "CCC" in stored and "MMM" in stored
    for text in (stored, str(error.value), out.getvalue()):
        assert len(text) < 2000


def test_morphs_error_holding_a_nul_is_recorded_and_frees_the_connection(deals):
    # PostgreSQL stores no NUL: refused, the record would leave the connection held.
    deals.fail(403, body=json.dumps({"error": {"code": "MORPH::\x00", "message": "No\x00"}}).encode())

    with pytest.raises(CommandError, match="answered 403"):
        sync_tenant()

    connection = Connection.objects.get()
    assert connection.last_sync_outcome == "failed" and "answered 403" in connection.last_sync_error
    assert connection.sync_lease is None


def test_an_interrupted_sync_resumes_after_the_last_page_applied(fake_api):
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal(f"opp_{index}") for index in range(5)])
    fake_api.fail(500, times=3, page=1)  # more than API_RETRIES allows
    out = io.StringIO()

    with pytest.raises(CommandError, match="500 after 3 attempts"):
        call_command(
            "morph_webhooks_sync",
            "--connector",
            CONNECTOR,
            "--owner",
            OWNER,
            "--model",
            OPPORTUNITIES,
            stdout=out,
            stderr=out,
        )

    assert Opportunity.objects.count() == 2
    assert "crmOpportunity: 1 page, 2 resources (incomplete): 2 created" in out.getvalue()
    assert "hubspot / tenant_1: FAILED" in out.getvalue()
    connection = Connection.objects.get()
    saved = connection.cursors[OPPORTUNITIES]["cursor"]
    assert connection.last_sync_outcome == "failed"
    fake_api.requests.clear()

    output = sync_tenant()

    assert fake_api.requests[0].cursor == saved
    assert Opportunity.objects.count() == 5
    assert "resumed the scan" in output
    assert Connection.objects.get().cursors == {}


class TestCursorsThatLeadNowhere:
    def test_a_cursor_given_twice_stops_the_scan_and_is_not_kept(self, fake_api):
        fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1")])
        served = fake_api.answer
        asked: list[str] = []

        def the_same_next_every_time(path: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
            asked.append(path)
            if len(asked) > 50:  # enough to show a sync going round
                return served(path, headers)
            return 200, {"object": "list", "data": [deal("opp_1")], "next": "loop"}, {}

        fake_api.answer = the_same_next_every_time  # type: ignore[method-assign]

        with pytest.raises(CommandError, match="gave a cursor twice .* go round in circles") as error:
            sync_tenant("--delete-missing")

        assert "The next sync starts crmOpportunity over." in str(error.value)
        assert len(asked) == 2 and asked[1].endswith("cursor=loop")
        connection = Connection.objects.get()
        assert connection.last_sync_outcome == "failed" and connection.cursors == {}
        assert connection.sync_lease is None
        fake_api.answer = served  # type: ignore[method-assign]

        sync_tenant()

        assert fake_api.requests[0].cursor is None
        assert Connection.objects.get().last_sync_outcome == "succeeded"

    def test_a_long_run_of_empty_pages_stops_the_scan(self, fake_api, monkeypatch):
        monkeypatch.setattr(morph_api, "MAX_EMPTY_PAGES", 5)
        Opportunity.objects.create(
            connector_id=CONNECTOR,
            owner_id=OWNER,
            remote_id="opp_1",
            remote_created_at=T0,
            remote_updated_at=T0,
        )
        asked: list[str | None] = []

        def empty_pages_for_ever(path: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
            asked.append(path)
            if len(asked) > 50:  # enough to show a sync that does not stop by itself
                return 400, {"error": {"code": "MORPH::BAD_REQUEST", "message": "Gone."}}, {}
            return 200, {"object": "list", "data": [], "next": uuid.uuid4().hex}, {}

        fake_api.answer = empty_pages_for_ever  # type: ignore[method-assign]

        with pytest.raises(CommandError, match="answered 5 empty pages in a row, each with a next cursor"):
            sync_tenant("--delete-missing")

        assert len(asked) == 5
        connection = Connection.objects.get()
        assert connection.cursors == {} and Opportunity.objects.alive().count() == 1


def test_the_next_page_is_asked_for_while_a_page_is_applied_one_ahead_at_most(fake_api):
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal(f"opp_{index}") for index in range(6)])
    asked_while_applying: list[int] = []

    def applying(instance: Opportunity, **kwargs: Any) -> None:
        if instance.remote_id == "opp_1":  # the first page's last
            wait_until(lambda: len(fake_api.requests) >= 2)
            time.sleep(0.1)  # time enough to ask for a third page too, were it not one ahead at most
            asked_while_applying.append(len(fake_api.requests))

    signals.opportunity_created.connect(applying, weak=False, dispatch_uid="test-ahead")
    try:
        sync_tenant()
    finally:
        signals.opportunity_created.disconnect(dispatch_uid="test-ahead")

    assert asked_while_applying == [2]
    assert Opportunity.objects.count() == 6 and len(fake_api.requests) == 3


class TestDeleteMissing:
    def test_after_a_complete_scan_it_deletes_what_morph_no_longer_has(self, deals, received):
        sync_tenant()
        deals.remove(CONNECTOR, OWNER, OPPORTUNITIES, "opp_2")
        received.clear()

        sync_tenant("--delete-missing")

        assert list(
            Opportunity.objects.alive().values_list("remote_id", flat=True).order_by("remote_id")
        ) == [
            "opp_1",
            "opp_3",
        ]
        assert [(action, event.remote_id, event.source) for action, event in received] == [
            ("deleted", "opp_2", "sync")
        ]
        assert counts()["deleted"] == 1

    def test_a_deleted_row_listed_again_at_its_version_comes_back(self, fake_api, received):
        fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal(f"opp_{index}") for index in range(5)])
        sync_tenant()
        fake_api.remove(CONNECTOR, OWNER, OPPORTUNITIES, "opp_2")
        sync_tenant("--delete-missing")
        fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_2")])  # the same updatedAt
        received.clear()

        sync_tenant()

        assert Opportunity.objects.alive().count() == 5
        assert [(action, event.remote_id) for action, event in received] == [("updated", "opp_2")]
        assert (counts()["updated"], counts()["unchanged"]) == (1, 4)
        received.clear()

        sync_tenant("--delete-missing")

        assert received == [] and counts()["unchanged"] == 5

    def test_a_webhook_replay_does_not_bring_back_what_a_sync_deleted(self, deals, send):
        sync_tenant()
        deals.remove(CONNECTOR, OWNER, OPPORTUNITIES, "opp_2")
        sync_tenant("--delete-missing")

        # A notification re-sent from before the deletion: the same updatedAt.
        replay = opportunity_event("updated", "opp_2", updated_at=T0)

        assert send(replay).json() == {"status": "stale"}
        assert Opportunity.objects.get(remote_id="opp_2").is_deleted

    def test_morphs_own_delete_stays_when_its_list_still_shows_the_resource(self, deals, send):
        sync_tenant()
        deals.remove(CONNECTOR, OWNER, OPPORTUNITIES, "opp_2")
        sync_tenant("--delete-missing")
        # Morph's deleted event at the same updatedAt: the deletion is Morph's now.
        assert send(opportunity_event("deleted", "opp_2", updated_at=T0)).json() == {"status": "processed"}
        deals.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_2")])  # a list lagging behind

        sync_tenant()

        assert Opportunity.objects.get(remote_id="opp_2").is_deleted
        assert counts()["unchanged"] == 3

    def test_rows_written_here_since_the_scan_started_are_kept(self, deals):
        sync_tenant()
        deals.remove(CONNECTOR, OWNER, OPPORTUNITIES, "opp_2")

        def webhook_meanwhile(**kwargs: Any) -> None:
            # A webhook for a deal the scan has not returned, written while the scan runs.
            Opportunity.objects.update_or_create(
                connector_id=CONNECTOR,
                owner_id=OWNER,
                remote_id="opp_new",
                defaults={"remote_created_at": T0, "remote_updated_at": T0},
            )

        deals.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1", 5)])
        signals.opportunity_updated.connect(webhook_meanwhile, weak=False, dispatch_uid="test-meanwhile")
        try:
            sync_tenant("--delete-missing")
        finally:
            signals.opportunity_updated.disconnect(dispatch_uid="test-meanwhile")

        assert sorted(Opportunity.objects.alive().values_list("remote_id", flat=True)) == [
            "opp_1",
            "opp_3",
            "opp_new",
        ]

    def test_an_interrupted_scan_deletes_nothing_and_its_resumed_end_does(self, fake_api):
        fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal(f"opp_{index}") for index in range(5)])
        sync_tenant()
        fake_api.remove(CONNECTOR, OWNER, OPPORTUNITIES, "opp_0")
        fake_api.fail(500, times=3, page=1)

        with pytest.raises(CommandError):
            sync_tenant("--delete-missing")

        assert not Opportunity.objects.deleted().exists()

        # The rows the first part of the scan returned are marked: the resumed scan is complete.
        sync_tenant("--delete-missing")

        assert list(Opportunity.objects.deleted().values_list("remote_id", flat=True)) == ["opp_0"]

    @pytest.mark.parametrize(
        "answer",
        [
            b'{"object": "error", "data": [], "next": null, "error": {"code": "MORPH::X", "message": "No."}}',
            b'{"object": "list", "data": []}',
            b'{"object": "list", "data": [], "next": null, "error": {}}',
            b"[" * 200_000 + b"]" * 200_000,
        ],
    )
    def test_a_page_answered_with_anything_but_a_list_fails_the_scan_and_deletes_nothing(
        self, fake_api, answer
    ):
        fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal(f"opp_{index}") for index in range(10)])
        sync_tenant()
        fake_api.fail(200, body=answer, page=1)

        with pytest.raises(CommandError, match="answered .*crmOpportunity.* with"):
            sync_tenant("--delete-missing")

        assert not Opportunity.objects.deleted().exists()
        connection = Connection.objects.get()
        assert connection.last_sync_outcome == "failed" and "Traceback" not in connection.last_sync_error


def test_a_dry_run_writes_nothing(deals, received):
    output = sync_tenant("--dry-run", "--delete-missing")

    assert not Opportunity.objects.exists() and not Connection.objects.exists()
    assert received == []
    assert "3 created" in output and "would delete about 0" in output


def test_a_dry_run_says_what_would_change(deals):
    sync_tenant()
    deals.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1", 5, name="Renamed"), deal("opp_4")])
    deals.remove(CONNECTOR, OWNER, OPPORTUNITIES, "opp_2")
    cursors_before = Connection.objects.get().cursors

    output = sync_tenant("--dry-run", "--delete-missing")

    assert "3 resources: 1 created, 1 updated, 1 unchanged" in output and "would delete about 1" in output
    assert Opportunity.objects.get(remote_id="opp_1").name == "Acme renewal"
    assert Opportunity.objects.alive().count() == 3
    assert Connection.objects.get().cursors == cursors_before


def test_invalid_resources_are_named_and_the_rest_stored(fake_api):
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1"), deal("opp_bad", amount=-1), deal("opp_3")])

    with pytest.raises(
        CommandError, match=r"Invalid resources for hubspot / tenant_1.*crmOpportunity \(1\)"
    ) as error:
        sync_tenant("--delete-missing")

    assert sorted(Opportunity.objects.values_list("remote_id", flat=True)) == ["opp_1", "opp_3"]
    assert counts()["failed"] == 1
    assert "opp_bad" in Connection.objects.get().last_sync_error or "crmOpportunity" in str(error.value)


@pytest.mark.parametrize("remote_id", [{"a": 1}, "", 12.5, "x" * 300])
def test_an_expanded_reference_with_an_unusable_id_fails_its_resource_only(fake_api, remote_id):
    custom = {**resource_event("crmStage", remote_id="won", fields={"name": "Won"})["data"], "id": remote_id}
    fake_api.add(
        CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1", customRef=custom), deal("opp_2"), deal("opp_3")]
    )

    out = io.StringIO()

    with pytest.raises(CommandError, match=r"crmOpportunity \(1\)"):
        call_command(
            "morph_webhooks_sync",
            "--connector",
            CONNECTOR,
            "--owner",
            OWNER,
            "--model",
            OPPORTUNITIES,
            stdout=out,
        )

    assert sorted(Opportunity.objects.values_list("remote_id", flat=True)) == ["opp_2", "opp_3"]
    assert not Stage.objects.exists()
    assert (counts()["created"], counts()["failed"]) == (2, 1)
    assert "failed: crmOpportunity 'opp_1': data.fields.customRef.id" in out.getvalue()


@pytest.mark.parametrize("where", ["listed", "expanded"])
def test_a_resource_or_expanded_reference_whose_id_holds_a_nul_fails_alone(fake_api, where):
    # Its id is looked up (and locked) before it is validated: a NUL in it would make PostgreSQL
    # fail the page's transaction, and every later run, with a DataError.
    stage = {**resource_event("crmStage", remote_id="won", fields={"name": "Won"})["data"], "id": "w\x00n"}
    first = deal("opp\x001") if where == "listed" else deal("opp_1", customRef=stage)
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [first, deal("opp_2"), deal("opp_3")])

    with pytest.raises(CommandError, match=r"crmOpportunity \(1\)"):
        sync_tenant()

    assert sorted(Opportunity.objects.values_list("remote_id", flat=True)) == ["opp_2", "opp_3"]
    assert not Stage.objects.exists()
    assert (counts()["created"], counts()["failed"]) == (2, 1)


def company(remote_id: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = resource_event("genericCompany", remote_id=remote_id, fields=fields)["data"]
    return data


def test_a_company_expanding_a_later_one_of_its_page_or_itself_is_stored_once(fake_api):
    created: list[str] = []
    signals.company_created.connect(
        lambda instance, **kwargs: created.append(instance.remote_id), weak=False, dispatch_uid="test-co"
    )
    fake_api.add(
        CONNECTOR,
        OWNER,
        "genericCompany",
        [
            company("co_1", name="One", parent=company("co_2", name="Two")),
            company("co_2", name="Two"),
            company("co_3", name="Three", itself=company("co_3", name="Three")),
        ],
    )
    try:
        sync("--connector", CONNECTOR, "--owner", OWNER, "--model", "genericCompany")
    finally:
        signals.company_created.disconnect(dispatch_uid="test-co")

    assert created == ["co_2", "co_1", "co_3"]
    connection = Connection.objects.get()
    assert connection.last_sync_outcome == "succeeded"
    assert connection.last_sync_counts["genericCompany"]["created"] == 3


def test_a_resource_larger_than_a_webhook_may_be_is_invalid(fake_api, settings):
    # The webhook's body limit: a resource read from the API is held to it too.
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "MAX_BODY_SIZE": 4096}
    fake_api.add(
        CONNECTOR,
        OWNER,
        OPPORTUNITIES,
        [deal("opp_1", notes="x" * 3000), deal("opp_big", notes="x" * 5000), deal("opp_3")],
    )

    out = io.StringIO()

    with pytest.raises(CommandError, match=r"crmOpportunity \(1\)"):
        call_command(
            "morph_webhooks_sync",
            "--connector",
            CONNECTOR,
            "--owner",
            OWNER,
            "--model",
            OPPORTUNITIES,
            stdout=out,
        )

    assert sorted(Opportunity.objects.values_list("remote_id", flat=True)) == ["opp_1", "opp_3"]
    assert counts()["failed"] == 1
    assert "failed: crmOpportunity 'opp_big': data: " in out.getvalue()
    assert "bytes as JSON, over MAX_BODY_SIZE (4096)" in out.getvalue()


def test_invalid_resources_are_listed_in_the_output(fake_api, capsys):
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_bad", amount=-1), {"id": 3}])
    out = io.StringIO()

    with pytest.raises(CommandError):
        call_command(
            "morph_webhooks_sync",
            "--connector",
            CONNECTOR,
            "--owner",
            OWNER,
            "--model",
            OPPORTUNITIES,
            stdout=out,
        )

    assert "failed: crmOpportunity 'opp_bad': data.fields.amount" in out.getvalue()
    assert "failed: crmOpportunity 3:" in out.getvalue()


def test_all_syncs_every_known_connection(fake_api):
    Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)
    Connection.objects.create(connector_id="pipedrive", owner_id="tenant_2")
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1")])
    fake_api.add("pipedrive", "tenant_2", OPPORTUNITIES, [deal("opp_1"), deal("opp_2")])

    sync("--all", "--model", OPPORTUNITIES)

    assert sorted(Opportunity.objects.values_list("connector_id", "remote_id")) == [
        ("hubspot", "opp_1"),
        ("pipedrive", "opp_1"),
        ("pipedrive", "opp_2"),
    ]
    assert set(Connection.objects.values_list("last_sync_outcome", flat=True)) == {"succeeded"}


def test_all_goes_on_after_a_connection_fails(fake_api):
    Connection.objects.create(connector_id="a_connector", owner_id="tenant_1")
    Connection.objects.create(connector_id="b_connector", owner_id="tenant_2")
    fake_api.add("b_connector", "tenant_2", OPPORTUNITIES, [deal("opp_1")])
    fake_api.fail(403)  # the first connection's first request

    with pytest.raises(CommandError, match="answered 403 for connector 'a_connector', owner 'tenant_1'"):
        sync("--all", "--model", OPPORTUNITIES)

    assert list(Opportunity.objects.values_list("connector_id", flat=True)) == ["b_connector"]
    assert dict(Connection.objects.values_list("connector_id", "last_sync_outcome")) == {
        "a_connector": "failed",
        "b_connector": "succeeded",
    }


def test_all_without_connections_says_so(fake_api):
    assert "No connection is known yet" in sync("--all")


@pytest.mark.parametrize(
    ("configured", "args", "message"),
    [
        ({"API_KEY": ""}, ["--all"], "credentials are not configured"),
        ({"API_SECRET": ""}, ["--all"], "credentials are not configured"),
        ({}, ["--connector", "hubspot"], "--connector needs --owner"),
        ({}, ["--all", "--owner", "x"], "--owner goes with --connector"),
        ({}, ["--connector", "x" * 256, "--owner", "o"], "--connector must be 1 to 255 characters"),
        ({}, ["--connector", "c", "--owner", ""], "--connector needs --owner"),
        ({}, ["--all", "--model", "crmNothing"], "invalid choice: 'crmNothing'"),
    ],
)
def test_the_command_refuses_what_it_cannot_do(fake_api, settings, configured, args, message):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, **configured}

    with pytest.raises(CommandError, match=message):
        sync(*args)


@pytest.mark.parametrize(
    ("hidden", "importers", "args", "extra"),
    [
        (["httpx"], ["api", "sync", "management.commands.morph_webhooks_sync"], ["--all"], "sync"),
        (["django.tasks", "django_tasks"], ["deferred", "sync_queue"], ["--all", "--enqueue"], "tasks"),
    ],
)
def test_a_missing_optional_dependency_is_a_command_error_naming_its_extra(
    fake_api, monkeypatch, hidden, importers, args, extra
):
    Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # None: "not installed"
    # The modules that import it, imported afresh as in a project without the extra.
    for module in importers:
        monkeypatch.delitem(sys.modules, f"morph_webhooks.{module}", raising=False)

    with pytest.raises(CommandError) as error:
        sync(*args)

    assert f"pip install '/path/to/morph-webhooks[{extra}]'" in str(error.value)


def test_a_saved_cursor_morph_refuses_is_dropped_for_the_next_run(fake_api):
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1")])
    connection = Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)
    connection.save_cursor(OPPORTUNITIES, "expired-cursor", T0)

    with pytest.raises(CommandError, match="answered 400 .* could not be resumed from its saved cursor"):
        sync_tenant()

    assert Connection.objects.get().cursors == {}
    sync_tenant()
    assert Opportunity.objects.count() == 1


def test_a_resync_costs_statements_per_page_not_per_resource(fake_api, settings):
    # Each page's stored versions are compared in one query; only what changed is written.
    def statements_of_a_resync(page_size: int) -> int:
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "API_PAGE_SIZE": page_size}
        with statements() as sql:
            sync_tenant()
        return len(sql)

    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal(f"opp_{index}") for index in range(40)])
    sync_tenant()

    assert statements_of_a_resync(20) == statements_of_a_resync(2) - 18 * PAGE_STATEMENTS
    assert counts()["unchanged"] == 40


def test_a_first_sync_inserts_a_pages_new_rows_in_one_statement(fake_api, settings):
    # The page's lock query tells what is new: no query per resource, one INSERT per page.
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "API_PAGE_SIZE": 20}
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal(f"opp_{index}") for index in range(40)])
    Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)

    with statements() as sql:
        sync_tenant()

    table = Opportunity._meta.db_table
    page = [statement for statement in sql if f'"{table}"' in statement]
    assert [statement.split()[0] for statement in page] == 2 * [
        "SELECT",  # the page's stored rows, locked
        "INSERT",  # its 20 new rows, marked seen as they are written
    ]
    # And the pairs of their lists (each deal lists a contact and a company): one INSERT per list,
    # in one statement on PostgreSQL.
    pairs = [statement for statement in sql if f'"{table}c' in statement]
    per_page = 1 if db_connection.vendor == "postgresql" else 2
    assert len(pairs) == 2 * per_page
    # A page of new rows costs what a page of a re-sync does, but for its pairs: an INSERT for the
    # re-sync's UPDATE marking its rows seen.
    first_sync_pages = len(sql)
    with statements() as sql:
        sync_tenant()
    assert first_sync_pages == len(sql) + len(pairs)
    assert not Opportunity.objects.filter(synced_at__isnull=True).exists()
    assert Opportunity.objects.count() == 40 and counts()["unchanged"] == 40


def test_a_page_is_applied_in_its_order(fake_api, received):
    # New rows inserted together still come in the page's order with what else the page holds.
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_2")])
    sync_tenant()
    received.clear()
    fake_api.resources[(CONNECTOR, OWNER, OPPORTUNITIES)] = [
        deal("opp_1"),
        deal("opp_2", 5, name="Later"),
        deal("opp_3"),
        deal("opp_4"),
        deal("opp_3", 5, name="Later"),
    ]

    sync_tenant()

    assert [(action, event.remote_id) for action, event in received] == [
        ("created", "opp_1"),
        ("updated", "opp_2"),
        ("created", "opp_3"),
        ("created", "opp_4"),
        ("updated", "opp_3"),
    ]
    assert Opportunity.objects.get(remote_id="opp_3").name == "Later"
    assert (counts()["created"], counts()["updated"]) == (3, 2)


def test_a_resource_listed_twice_in_a_page_is_stored_once_per_version(fake_api, received):
    fake_api.resources[(CONNECTOR, OWNER, OPPORTUNITIES)] = [deal("opp_1"), deal("opp_1", 5, name="Later")]

    sync_tenant()

    assert Opportunity.objects.get().name == "Later"
    assert [action for action, _ in received] == ["created", "updated"]


class TestAReSyncOfStoredVersions:
    """A version already stored is recognised by its updatedAt and not validated again; anything
    else takes the full path, with the same outcomes as a webhook's."""

    def test_a_stored_version_is_unchanged_whatever_its_fields_say(self, deals, received):
        sync_tenant()
        received.clear()
        # The same updatedAt: the version stored (a CRM that did not bump it changed nothing here).
        deals.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1", name="Renamed", amount=-1)])

        sync_tenant()

        assert counts()["unchanged"] == 3 and received == []
        assert Opportunity.objects.get(remote_id="opp_1").name == "Acme renewal"

    def test_an_id_listed_twice_is_applied_in_order(self, deals, received):
        sync_tenant()
        received.clear()
        deals.resources[(CONNECTOR, OWNER, OPPORTUNITIES)] = [deal("opp_1", 5, name="Later"), deal("opp_1")]

        sync_tenant()

        assert Opportunity.objects.get(remote_id="opp_1").name == "Later"
        assert (counts()["updated"], counts()["stale"]) == (1, 1)

    def test_an_expanded_resource_newer_than_its_stored_copy_is_stored(self, fake_api):
        def with_stage(minutes: int, name: str) -> dict[str, Any]:
            stage = resource_event(
                "crmStage", remote_id="won", fields={"name": name}, updated_at=T0 + timedelta(minutes=minutes)
            )["data"]
            return deal("opp_1", stage=stage)

        fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [with_stage(0, "Won")])
        sync_tenant()
        fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [with_stage(5, "Closed won")])

        sync_tenant()

        assert Stage.objects.get().name == "Closed won" and counts()["unchanged"] == 1

    def test_an_unusable_id_is_reported_invalid(self, fake_api):
        fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1")])
        sync_tenant()
        fake_api.resources[(CONNECTOR, OWNER, OPPORTUNITIES)].append({**deal("opp_1"), "id": ["opp_1"]})

        with pytest.raises(CommandError, match=r"crmOpportunity \(1\)"):
            sync_tenant()

        assert counts()["unchanged"] == 1


def test_a_failing_receiver_rolls_the_page_back_and_is_recorded(deals):
    with (
        raising_receiver(signals.opportunity_created, RuntimeError, "receiver exploded", remote_id="opp_3"),
        pytest.raises(RuntimeError, match="receiver exploded"),
    ):
        sync_tenant()

    assert Opportunity.objects.count() == 2  # the first page
    connection = Connection.objects.get()
    assert (connection.last_sync_outcome, connection.last_sync_error) == (
        "failed",
        "RuntimeError: receiver exploded",
    )
    assert connection.last_sync_finished_at is not None and OPPORTUNITIES in connection.cursors

    sync_tenant()

    assert Opportunity.objects.count() == 3 and Connection.objects.get().last_sync_outcome == "succeeded"


def test_ctrl_c_is_recorded_and_the_next_run_resumes(deals):
    with (
        raising_receiver(signals.opportunity_created, KeyboardInterrupt, "", remote_id="opp_3"),
        pytest.raises(KeyboardInterrupt),
    ):
        sync_tenant()

    connection = Connection.objects.get()
    assert (connection.last_sync_outcome, connection.last_sync_error) == ("failed", "Interrupted.")
    assert Opportunity.objects.count() == 2 and OPPORTUNITIES in connection.cursors


@pytest.mark.django_db(transaction=True)
@postgresql_only
def test_sigterm_stops_a_sync_as_ctrl_c_does_and_frees_the_connection(deals, tmp_path):
    # systemd, Kubernetes and `timeout` stop a process with SIGTERM: a real process, then.
    deals.fail(None, delay=60, page=1)  # the sync waits for its second page
    (tmp_path / "sync_settings.py").write_text(
        "from tests.settings import *\n"
        f"MORPH_WEBHOOKS = {{**MORPH_WEBHOOKS, 'API_PAGE_SIZE': 2, 'API_URL': {deals.url!r}, "
        f"'API_KEY': {deals.key!r}, 'API_SECRET': {deals.secret!r}}}\n"
    )
    database = db_connection.settings_dict
    sync_process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "morph_webhooks_sync",
            "--connector",
            CONNECTOR,
            "--owner",
            OWNER,
            "--model",
            OPPORTUNITIES,
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
            "DJANGO_SETTINGS_MODULE": "sync_settings",
            "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: Connection.objects.filter(cursors__has_key=OPPORTUNITIES).exists(), timeout=60)
        sync_process.send_signal(SIGTERM)
        out, err = sync_process.communicate(timeout=30)
    finally:
        sync_process.kill()

    assert sync_process.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert "CommandError: Stopped by SIGTERM, as by Ctrl-C" in err
    connection = Connection.objects.get()
    assert (connection.last_sync_outcome, connection.last_sync_error) == ("failed", "Interrupted (SIGTERM).")
    assert (connection.sync_lease, connection.sync_lease_until) == (None, None)
    saved = connection.cursors[OPPORTUNITIES]["cursor"]
    deals.requests.clear()

    # Not "already running" for SYNC_LEASE_SECONDS: the next run resumes at once.
    assert "resumed the scan" in sync_tenant()
    assert deals.requests[0].cursor == saved and Opportunity.objects.count() == 3


@pytest.mark.django_db(transaction=True)
@postgresql_only
def test_a_webhook_racing_the_sync_for_a_new_row_wins_when_newer(fake_api, received):
    # The page found opp_2 new; before its new rows are inserted, a newer webhook creates opp_2
    # and commits: the page's insert collides, the page starts over, and its older copy is stale.
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1"), deal("opp_2")])
    raced: list[int] = []

    def webhook_meanwhile(instance: Opportunity, **kwargs: Any) -> None:
        if instance.remote_id != "opp_1" or raced:
            return
        newer = opportunity_event(
            "updated", "opp_2", updated_at=T0 + timedelta(minutes=9), fields={"name": "Webhook"}
        )
        with ThreadPoolExecutor(1) as pool:
            raced.append(pool.submit(post_in_thread, newer).result())

    pre_save.connect(webhook_meanwhile, sender=Opportunity, weak=False, dispatch_uid="test-race")
    try:
        sync_tenant()
    finally:
        pre_save.disconnect(sender=Opportunity, dispatch_uid="test-race")

    assert raced == [200]
    assert Opportunity.objects.get(remote_id="opp_2").name == "Webhook"
    assert (counts()["created"], counts()["stale"]) == (1, 1)
    assert [(action, event.remote_id, event.source) for action, event in received] == [
        ("updated", "opp_2", "webhook"),
        ("created", "opp_1", "sync"),
    ]


@pytest.mark.django_db(transaction=True)
@postgresql_only
def test_a_webhook_for_a_row_the_sync_just_created_waits_and_then_applies_when_newer(fake_api):
    # The page inserted opp_1 and opp_2, not committed yet: a newer webhook for opp_2 waits on the
    # row's unique index, finds the sync's row once the page commits, and updates it.
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1"), deal("opp_2")])
    pool = ThreadPoolExecutor(1)
    pending: list[Future[int]] = []

    def webhook_meanwhile(instance: Opportunity, **kwargs: Any) -> None:
        if instance.remote_id != "opp_1":
            return
        newer = opportunity_event(
            "updated", "opp_2", updated_at=T0 + timedelta(minutes=9), fields={"name": "Webhook"}
        )
        pending.append(pool.submit(post_in_thread, newer))
        time.sleep(0.3)
        assert not pending[0].done()

    signals.opportunity_created.connect(webhook_meanwhile, weak=False, dispatch_uid="test-race")
    try:
        sync_tenant()
    finally:
        signals.opportunity_created.disconnect(dispatch_uid="test-race")

    assert pending[0].result(timeout=10) == 200
    pool.shutdown()
    assert Opportunity.objects.get(remote_id="opp_2").name == "Webhook"
    assert counts()["created"] == 2


@pytest.mark.django_db(transaction=True)
@postgresql_only
def test_a_webhook_for_a_row_the_sync_holds_waits_and_then_applies(fake_api):
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1"), deal("opp_2")])
    sync_tenant()
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1", 5, name="From the API")])
    pool = ThreadPoolExecutor(1)
    pending: list[Future[int]] = []

    def webhook_meanwhile(instance: Opportunity, **kwargs: Any) -> None:
        # opp_1 is locked by the sync's open page: the webhook waits for its commit.
        newer = opportunity_event(
            "updated", "opp_1", updated_at=T0 + timedelta(minutes=9), fields={"name": "Webhook"}
        )
        pending.append(pool.submit(post_in_thread, newer))
        time.sleep(0.3)
        assert not pending[0].done()

    signals.opportunity_updated.connect(webhook_meanwhile, weak=False, dispatch_uid="test-race")
    try:
        sync_tenant()
    finally:
        signals.opportunity_updated.disconnect(dispatch_uid="test-race")

    assert pending[0].result(timeout=10) == 200
    pool.shutdown()
    assert Opportunity.objects.get(remote_id="opp_1").name == "Webhook"


def stage_won(minutes: int, name: str) -> dict[str, Any]:
    data: dict[str, Any] = resource_event(
        "crmStage", remote_id="won", fields={"name": name}, updated_at=T0 + timedelta(minutes=minutes)
    )["data"]
    return data


@pytest.mark.django_db(transaction=True)
@postgresql_only
def test_a_webhook_and_a_page_expanding_the_same_stage_take_their_locks_in_one_order(fake_api):
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1", stage=stage_won(0, "Won"))])
    sync_tenant()
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1", 5, stage=stage_won(5, "From the API"))])
    holding = threading.Event()

    def hold_until_the_sync_waits(event: Any, **kwargs: Any) -> None:
        # The webhook holds the stage's row, and the deal's: the sync's page waits for one of
        # them, which it would otherwise lock first and then wait for the other, held here.
        if event.source != "webhook":
            return
        holding.set()
        with db_connection.cursor() as cursor:
            for _ in range(200):
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if cursor.fetchone()[0]:
                    return
                time.sleep(0.05)

    newer = opportunity_event(
        "updated",
        "opp_1",
        updated_at=T0 + timedelta(minutes=9),
        fields={"name": "Webhook", "stage": stage_won(9, "From the webhook")},
    )
    signals.stage_updated.connect(hold_until_the_sync_waits, weak=False, dispatch_uid="test-lock-order")
    pool = ThreadPoolExecutor(1)
    try:
        webhook = pool.submit(post_in_thread, newer)
        assert holding.wait(10)
        sync_tenant()
        status = webhook.result(timeout=20)
    finally:
        signals.stage_updated.disconnect(dispatch_uid="test-lock-order")
        pool.shutdown()

    assert status == 200
    assert Stage.objects.get().name == "From the webhook"
    assert Opportunity.objects.get().name == "Webhook"
    assert counts()["stale"] == 1


def post_in_thread(payload: dict[str, Any]) -> int:
    try:
        return int(post_event(Client(), payload, headers=morph_headers()).status_code)
    finally:
        db_connection.close()


DATABASE_TASKS = "django_tasks_db.DatabaseBackend"
DUMMY_TASKS = (
    "django.tasks.backends.dummy.DummyBackend"
    if django.VERSION >= (6,)
    else "django_tasks.backends.dummy.DummyBackend"
)


def test_enqueue_on_the_immediate_backend_syncs_each_connection_inline(
    fake_api, django_capture_on_commit_callbacks
):
    Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)
    Connection.objects.create(connector_id="pipedrive", owner_id="tenant_2")
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1")])
    fake_api.add("pipedrive", "tenant_2", OPPORTUNITIES, [deal("opp_1"), deal("opp_2")])

    with django_capture_on_commit_callbacks(execute=True):
        out = sync("--all", "--enqueue", "--model", OPPORTUNITIES)

    assert "the syncs run here, one by one" in out
    assert "2 syncs run" in out
    assert Opportunity.objects.count() == 3
    assert dict(Connection.objects.values_list("connector_id", "last_sync_outcome")) == {
        CONNECTOR: "succeeded",
        "pipedrive": "succeeded",
    }
    assert Connection.objects.get(connector_id="pipedrive").last_sync_counts == {
        OPPORTUNITIES: {"created": 2, "updated": 0, "unchanged": 0, "stale": 0, "deleted": 0, "failed": 0}
    }


def test_enqueue_one_connection_queues_one_task(fake_api, settings):
    settings.TASKS = {"default": {"BACKEND": DATABASE_TASKS}}
    from django_tasks_db.models import DBTaskResult

    out = sync_tenant("--enqueue", "--delete-missing")

    assert "1 sync queued on the task backend 'default': its workers run it;" in out
    connection = Connection.objects.get(connector_id=CONNECTOR, owner_id=OWNER)
    task = DBTaskResult.objects.get()
    assert task.task_path == "morph_webhooks.deferred.sync_connection_task"
    assert task.args_kwargs["args"] == [connection.pk, [OPPORTUNITIES], True]
    assert connection.last_sync_started_at is None  # a worker runs it


def test_enqueue_without_a_backend_that_runs_tasks_says_what_to_run(fake_api, settings):
    settings.TASKS = {"default": {"BACKEND": DUMMY_TASKS}}

    with pytest.raises(CommandError) as raised:
        sync_tenant("--enqueue")

    message = str(raised.value)
    assert "never runs a task" in message
    assert f"python manage.py morph_webhooks_sync --connector {CONNECTOR} --owner {OWNER}" in message


def test_enqueue_without_a_backend_quotes_the_ids_in_the_command_to_run(fake_api, settings):
    settings.TASKS = {"default": {"BACKEND": DUMMY_TASKS}}

    with pytest.raises(CommandError) as raised:
        sync("--connector", "hub spot", "--owner", '"><img src=x onerror=alert(1)>', "--enqueue")

    assert (
        "python manage.py morph_webhooks_sync --connector 'hub spot' --owner '\"><img src=x onerror=alert(1)>'"
        in str(raised.value)
    )


def test_enqueue_is_no_dry_run(fake_api):
    with pytest.raises(CommandError, match="cannot be queued"):
        sync_tenant("--enqueue", "--dry-run")


class TestOneSyncAtATime:
    def test_a_sync_holding_the_connection_makes_another_exit_non_zero(self, deals):
        holder = Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)
        assert holder.claim_sync()  # a sync in another process, running

        with pytest.raises(CommandError) as error:
            sync_tenant()

        started = f"{holder.last_sync_started_at:%Y-%m-%d %H:%M:%S}"
        assert f"A sync of {CONNECTOR} / {OWNER} is already running, since {started} UTC" in str(error.value)
        assert not Opportunity.objects.exists() and deals.requests == []
        # The running sync's state is left alone.
        connection = Connection.objects.get()
        assert (connection.sync_lease, connection.last_sync_finished_at) == (holder.sync_lease, None)

    def test_a_lease_left_by_a_sync_that_died_expires(self, deals):
        assert Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER).claim_sync()
        with pytest.raises(CommandError, match="already running"):
            sync_tenant()

        # SYNC_LEASE_SECONDS later, and no page has renewed it.
        Connection.objects.update(sync_lease_until=timezone.now() - timedelta(seconds=1))
        sync_tenant()

        connection = Connection.objects.get()
        assert Opportunity.objects.count() == 3 and connection.last_sync_outcome == "succeeded"
        assert (connection.sync_lease, connection.sync_lease_until) == (None, None)  # given back

    def test_a_sync_whose_lease_was_taken_over_stops_without_committing_its_page(self, deals):
        connection = Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)

        def taken_over(model: ModelSync) -> None:
            # Its lease expired (a page slower than SYNC_LEASE_SECONDS) and another sync claimed it.
            Connection.objects.update(sync_lease=uuid.uuid4())

        with pytest.raises(SyncLeaseLost, match=f"The sync of {CONNECTOR} / {OWNER} stopped"):
            sync_connection(connection, models_to_sync([OPPORTUNITIES]), on_page=taken_over)

        assert Opportunity.objects.count() == 2  # the first page; the second rolled back
        row = Connection.objects.get()
        # The other sync's run is the connection's: this one recorded nothing over it.
        assert (row.last_sync_outcome, row.last_sync_finished_at) == ("", None)
        assert row.cursors[OPPORTUNITIES]["cursor"] == deals.requests[1].cursor

    @pytest.mark.django_db(transaction=True)
    @postgresql_only
    def test_two_concurrent_syncs_of_one_connection_never_run_together(self, deals):
        deals.fail(None, delay=1.5, page=1)  # the first sync is slow on its second page
        first = ThreadPoolExecutor(1)
        running = first.submit(sync_in_thread)
        wait_until(lambda: Connection.objects.filter(sync_lease__isnull=False).exists())
        started = Connection.objects.get().last_sync_started_at

        with pytest.raises(CommandError, match=f"already running, since {started:%Y-%m-%d %H:%M:%S} UTC"):
            sync_tenant()
        # A queued sync of it (a "Sync now", --enqueue) finishes without syncing, and says so.
        queued = sync_connection_task.enqueue(Connection.objects.get().pk, [OPPORTUNITIES], False)

        assert str(queued.status) == "SUCCESSFUL"
        assert queued.return_value.startswith(f"A sync of {CONNECTOR} / {OWNER} is already running")
        assert "hubspot / tenant_1: ok: 3 created" in running.result(timeout=30)
        first.shutdown()
        assert [request.cursor is None for request in deals.requests] == [True, False]
        assert Opportunity.objects.count() == 3
        assert Connection.objects.get().last_sync_outcome == "succeeded"

    @pytest.mark.django_db(transaction=True)
    @postgresql_only
    def test_a_connection_whose_sync_died_is_synced_once_its_lease_expires(self, deals, settings):
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "SYNC_LEASE_SECONDS": 1.0}
        deals.fail(None, delay=0.5, page=1)
        assert Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER).claim_sync()  # then died
        with pytest.raises(CommandError, match="already running"):
            sync_tenant()
        wait_until(lambda: Connection.objects.get().sync_lease_until < timezone.now())

        # Two syncs race for the expired lease: one syncs, the other is turned away.
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(
                "synced" if "ok: 3 created" in output else output
                for output in pool.map(lambda _: sync_in_thread(), range(2))
            )

        assert outcomes[1] == "synced" and "already running" in outcomes[0]
        assert Opportunity.objects.count() == 3


def sync_in_thread() -> str:
    """A sync in this thread, as another process's would be; its output, or the error's text."""
    try:
        return sync_tenant()
    except CommandError as exc:
        return str(exc)
    finally:
        db_connection.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class TestFailedSyncTask:
    def test_a_failed_sync_is_a_failed_task(self, deals):
        connection = Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)
        deals.fail(403)

        result = sync_connection_task.enqueue(connection.pk, [OPPORTUNITIES], False)

        assert str(result.status) == "FAILED"
        assert result.errors[0].exception_class_path == "morph_webhooks.sync.SyncFailed"
        connection.refresh_from_db()
        assert connection.last_sync_outcome == "failed" and "403" in connection.last_sync_error
        assert connection.sync_lease is None  # given back for the next run

    def test_a_successful_sync_is_a_successful_task(self, deals):
        connection = Connection.objects.create(connector_id=CONNECTOR, owner_id=OWNER)

        result = sync_connection_task.enqueue(connection.pk, [OPPORTUNITIES], False)

        assert (str(result.status), result.return_value) == ("SUCCESSFUL", "succeeded")


def test_a_model_morph_cannot_list_is_named_and_the_others_are_synced(fake_api):
    # HubSpot retrieves engagements one at a time: Morph refuses to list them.
    fake_api.refuse_list("crmEngagement")
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1")])
    fake_api.add(
        CONNECTOR,
        OWNER,
        "genericWorkspace",
        [resource_event("genericWorkspace", "updated", "w1", fields={"name": "Sales"})["data"]],
    )
    out = io.StringIO()

    with pytest.raises(CommandError) as error:
        call_command(
            "morph_webhooks_sync", "--connector", CONNECTOR, "--owner", OWNER, stdout=out, stderr=out
        )

    refused = "Morph cannot list crmEngagement for connector 'hubspot', owner 'tenant_1'"
    assert refused in str(error.value) and "CONNECTOR::RESOURCE_MODEL::NOT_FOUND" in str(error.value)
    assert f"crmEngagement: not synced: {refused}" in out.getvalue()
    # The models before and after it were synced all the same.
    assert "crmOpportunity: 1 page, 1 resources: 1 created" in out.getvalue()
    assert list(Opportunity.objects.values_list("remote_id", flat=True)) == ["opp_1"]
    assert Workspace.objects.get().name == "Sales"
    connection = Connection.objects.get()
    assert connection.last_sync_outcome == "failed" and refused in connection.last_sync_error
    assert [request.status for request in fake_api.requests if request.model == "crmEngagement"] == [404]


def test_engagements_and_workspaces_are_synced_with_the_other_models(fake_api):
    fake_api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1")])
    call = engagement_event("updated", "call_1", updated_at=T0)["data"]
    fake_api.add(CONNECTOR, OWNER, "crmEngagement", [call])
    fake_api.add(
        CONNECTOR,
        OWNER,
        "genericWorkspace",
        [resource_event("genericWorkspace", "updated", "w1", fields={"name": "Sales"})["data"]],
    )

    output = sync("--connector", CONNECTOR, "--owner", OWNER)

    assert "crmEngagement: 1 page, 1 resources: 1 created" in output
    assert "genericWorkspace: 1 page, 1 resources: 1 created" in output
    engagement = Engagement.objects.get()
    assert (engagement.type, engagement.opportunity_ids, engagement.duration) == ("call", ["opp_1"], 300)
    assert Connection.objects.get().last_sync_outcome == "succeeded"


def test_a_synced_page_fills_the_relations_and_a_changed_list_replaces_its_pairs(fake_api):
    contacts = [
        resource_event("genericContact", remote_id=f"c{i}", fields={"email": f"c{i}@example.com"})["data"]
        for i in (1, 2, 3)
    ]
    fake_api.add(CONNECTOR, OWNER, "genericContact", contacts)
    listing = {"contacts": [reference("genericContact", "c1"), reference("genericContact", "c2")]}
    fake_api.add(
        CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1", **listing), deal("opp_2"), deal("opp_3", **listing)]
    )
    sync("--connector", CONNECTOR, "--owner", OWNER)
    for remote_id, emails in (
        ("opp_1", ["c1@example.com", "c2@example.com"]),
        ("opp_2", []),
        ("opp_3", ["c1@example.com", "c2@example.com"]),
    ):
        assert (
            sorted(Opportunity.objects.get(remote_id=remote_id).contacts.values_list("email", flat=True))
            == emails
        )

    fake_api.add(
        CONNECTOR, OWNER, OPPORTUNITIES, [deal("opp_1", 5, contacts=[reference("genericContact", "c3")])]
    )
    sync_tenant()
    assert list(Opportunity.objects.get(remote_id="opp_1").contacts.values_list("email", flat=True)) == [
        "c3@example.com"
    ]
    assert Contact.objects.get(remote_id="c1").opportunities.get().remote_id == "opp_3"
