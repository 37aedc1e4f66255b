"""The client of Morph's REST API, against the fake Morph API over real HTTP."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from morph_webhooks import api as morph_api
from morph_webhooks.api import AccessDenied, MorphAPI, MorphAPIError
from morph_webhooks.testing import opportunity_event
from morph_webhooks.testing.fake_api import FakeMorphAPI
from tests.helpers import free_port

MODEL = "crmOpportunity"


@pytest.fixture
def fake_api(settings: Any) -> Iterator[FakeMorphAPI]:
    with FakeMorphAPI() as api:
        settings.MORPH_WEBHOOKS = {
            **settings.MORPH_WEBHOOKS,
            "API_URL": api.url + "/",
            "API_KEY": api.key,
            "API_SECRET": api.secret,
            "API_PAGE_SIZE": 2,
            "API_RETRIES": 4,
        }
        yield api


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def client(fake_api: FakeMorphAPI, waits: list[float]) -> Iterator[MorphAPI]:
    with MorphAPI("hubspot", "tenant_1", sleep=waits.append) as client:
        yield client


def test_pages_are_read_as_consumed_one_ahead_at_most(fake_api, client):
    fake_api.add(
        "hubspot", "tenant_1", MODEL, [opportunity_event(remote_id=f"o{i}")["data"] for i in range(5)]
    )

    pages = client.pages(MODEL)
    first = next(pages)

    assert [resource["id"] for resource in first.resources] == ["o0", "o1"]
    # The second page is asked for while the caller holds the first; the third is not, yet.
    deadline = time.monotonic() + 10
    while len(fake_api.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(fake_api.requests) == 2
    rest = list(pages)
    assert [[resource["id"] for resource in page.resources] for page in rest] == [["o2", "o3"], ["o4"]]
    assert rest[-1].next_cursor is None
    assert [(r.connector_id, r.owner_id, r.limit) for r in fake_api.requests] == [
        ("hubspot", "tenant_1", 2)
    ] * 3


def test_a_connection_without_resources_is_one_empty_page(client):
    assert [page.resources for page in client.pages(MODEL)] == [[]]


def test_retry_after_is_honoured_within_a_bound(fake_api, client, waits):
    fake_api.fail(429, retry_after="2")
    fake_api.fail(429, retry_after="86400")
    fake_api.fail(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    fake_api.fail(500)

    assert client.page(MODEL).resources == []
    # Asked; at most MAX_WAIT; a date is not read, so the backoff stands (doubling per attempt).
    assert waits == [2.0, morph_api.MAX_WAIT, morph_api.BACKOFF * 4, morph_api.BACKOFF * 8]


@pytest.mark.parametrize("retry_after", ["nan", "inf", "-inf", "-5", "1e999", "9" * 5000, "2.5", ""])
def test_a_retry_after_not_in_seconds_leaves_the_backoff(fake_api, client, waits, retry_after):
    fake_api.fail(503, retry_after=retry_after, times=2)

    assert client.page(MODEL).resources == []
    assert waits == [morph_api.BACKOFF, morph_api.BACKOFF * 2]


def test_retries_are_bounded(fake_api, client, waits):
    fake_api.fail(502, times=10)

    with pytest.raises(
        MorphAPIError, match="answered 502 after 5 attempts for connector 'hubspot', owner 'tenant_1'"
    ) as error:
        client.page(MODEL)

    assert error.value.status == 502 and len(waits) == 4


@pytest.mark.parametrize("status", [401, 403])
def test_refused_access_is_not_retried_and_names_the_connection(fake_api, client, status):
    fake_api.fail(status)

    with pytest.raises(AccessDenied) as error:
        client.page(MODEL)

    assert len(fake_api.requests) == 1
    message = str(error.value)
    assert f"answered {status} for connector 'hubspot', owner 'tenant_1' (crmOpportunity)" in message
    assert "Injected fault" in message and "crmOpportunity::list" in message


def test_the_secret_appears_in_no_message_or_log(fake_api, settings, caplog):
    secret = "the-api-secret-never-shown-0123"
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "API_SECRET": secret}
    caplog.set_level(logging.DEBUG)

    with MorphAPI("hubspot", "tenant_1") as client, pytest.raises(AccessDenied) as error:
        client.page(MODEL)

    assert "MORPH::UNAUTHORIZED" in str(error.value)
    assert secret not in str(error.value) and secret not in repr(error.value.args)
    assert secret not in caplog.text


def test_an_answer_that_is_not_a_list_is_an_error(settings, waits):
    with FakeMorphAPI() as fake:
        settings.MORPH_WEBHOOKS = {
            **settings.MORPH_WEBHOOKS,
            "API_URL": fake.url,
            "API_KEY": "k",
            "API_SECRET": "s",
        }
        fake.answer = lambda path, headers: (200, {"object": "list", "data": {}}, {})  # type: ignore[method-assign]
        with (
            MorphAPI("hubspot", "tenant_1") as client,
            pytest.raises(MorphAPIError, match="something other than a list"),
        ):
            client.page(MODEL)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        # The webhook parser refuses two equal keys: so does the client (which would win differs).
        (b'{"object": "list", "data": [], "next": null, "next": "loop"}', "duplicate key 'next'"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"object": "list", "data": []}', "something other than a list"),
        (b'{"data": [], "next": null}', "something other than a list"),
        (b'{"object": "list", "data": [], "next": ""}', "something other than a list"),
        (b'{"object": "list", "data": [], "next": 2}', "something other than a list"),
        # A cursor no database can store: saving it would fail the page (PostgreSQL, every run).
        (b'{"object": "list", "data": [], "next": "c\\u0000d"}', "something other than a list"),
        (b'{"object": "list", "data": [], "next": "c\\ud800d"}', "something other than a list"),
        (
            b'{"object": "error", "data": [], "next": null, "error": {"code": "MORPH::X", "message": "Down."}}',
            "answered 200 for connector 'hubspot', owner 'tenant_1' .* with an error: MORPH::X: Down.",
        ),
        (b'{"object": "list", "data": [], "next": null, "error": null}', "with an error"),
        (b"\xff", "something other than JSON"),
    ],
)
def test_only_a_list_is_a_page(fake_api, client, body, problem):
    fake_api.fail(200, body=body)

    with pytest.raises(MorphAPIError, match=problem) as error:
        client.page(MODEL)

    assert error.value.status == 200 and len(str(error.value)) < 1000


def test_an_error_answer_nested_too_deeply_is_still_reported(fake_api, client):
    fake_api.fail(400, body=b'{"error": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")

    with pytest.raises(MorphAPIError, match="answered 400 .*: unknown: Bad Request"):
        client.page(MODEL)


def test_morphs_error_code_and_message_are_cut_short(fake_api, client):
    error = {"code": "C" * 2_000_000, "message": "M" * 2_000_000}
    fake_api.fail(403, body=json.dumps({"error": error}).encode())

    with pytest.raises(AccessDenied) as raised:
        client.page(MODEL)

    message = str(raised.value)
    assert "C" * (morph_api.CODE_CHARS - 1) + "…: " + "M" * (morph_api.MESSAGE_CHARS - 1) + "…" in message
    assert len(message) < morph_api.CODE_CHARS + morph_api.MESSAGE_CHARS + 500


def test_an_error_without_morphs_shape_is_still_reported(settings):
    with FakeMorphAPI() as fake:
        settings.MORPH_WEBHOOKS = {
            **settings.MORPH_WEBHOOKS,
            "API_URL": fake.url,
            "API_KEY": "k",
            "API_SECRET": "s",
        }
        fake.answer = lambda path, headers: (404, {"detail": "gone"}, {})  # type: ignore[method-assign]
        with (
            MorphAPI("hubspot", "tenant_1") as client,
            pytest.raises(MorphAPIError, match="404 .*: unknown: Not Found"),
        ):
            client.page(MODEL)


def test_an_unreachable_api_is_not_retried(settings, waits):
    settings.MORPH_WEBHOOKS = {
        **settings.MORPH_WEBHOOKS,
        "API_URL": f"http://127.0.0.1:{free_port()}",
        "API_KEY": "k",
        "API_SECRET": "s",
    }
    with (
        MorphAPI("hubspot", "tenant_1", sleep=waits.append) as client,
        pytest.raises(MorphAPIError, match="Could not reach Morph's API .*ConnectError"),
    ):
        client.page(MODEL)
    assert waits == []


def test_a_timeout_is_retried_then_reported(fake_api, settings, waits):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "API_TIMEOUT": 0.2, "API_RETRIES": 1}
    fake_api.fail(None, delay=0.5, times=2)

    with (
        MorphAPI("hubspot", "tenant_1", sleep=waits.append) as client,
        pytest.raises(MorphAPIError, match="did not answer in time .* after 2 attempts: ReadTimeout"),
    ):
        client.page(MODEL)
    assert waits == [morph_api.BACKOFF]


def test_the_timeout_bounds_the_whole_answer(fake_api, settings, waits):
    # Each byte comes well within the timeout of a read; the whole answer does not.
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "API_TIMEOUT": 1.0, "API_RETRIES": 1}
    fake_api.fail(None, trickle=0.2, times=2)

    with (
        MorphAPI("hubspot", "tenant_1", sleep=waits.append) as client,
        pytest.raises(
            MorphAPIError,
            match=r"after 2 attempts: ReadTimeout: the answer took longer than API_TIMEOUT \(1 s\)",
        ),
    ):
        client.page(MODEL)
    assert waits == [morph_api.BACKOFF]


def test_a_connection_dropped_mid_answer_is_retried(fake_api, client, waits):
    fake_api.add("hubspot", "tenant_1", MODEL, [opportunity_event(remote_id="o1")["data"]])
    fake_api.fail(None, cut=20, times=2)

    assert [resource["id"] for resource in client.page(MODEL).resources] == ["o1"]
    assert waits == [morph_api.BACKOFF, morph_api.BACKOFF * 2]


def test_a_connection_dropped_mid_answer_every_time_says_so(fake_api, client, waits):
    fake_api.fail(500, cut=5, times=10)

    with pytest.raises(
        MorphAPIError,
        match="dropped the connection before its answer was complete for connector 'hubspot', "
        "owner 'tenant_1' .* after 5 attempts: RemoteProtocolError: ",
    ):
        client.page(MODEL)
    assert len(waits) == 4


def test_the_timeout_is_explicit(client, settings):
    assert client.client.timeout == httpx.Timeout(30.0)


class TestFakeAPI:
    """What the fake answers beyond what the client asks: for users' own tests."""

    def get(self, fake: FakeMorphAPI, path: str, **headers: str) -> httpx.Response:
        sent = {"x-api-key": fake.key, "x-api-secret": fake.secret, "x-connector-id": "c", "x-owner-id": "o"}
        return httpx.get(fake.url + path, headers={**sent, **headers})

    def test_its_errors_have_morphs_shape(self):
        with FakeMorphAPI() as fake:
            assert self.get(fake, "/v2/other").json() == {
                "error": {"code": "MORPH::NOT_FOUND", "message": "No route /v2/other."}
            }
            assert self.get(fake, f"/v1/resources/{MODEL}?limit=0").status_code == 400
            assert self.get(fake, f"/v1/resources/{MODEL}?cursor=nonsense").status_code == 400
            assert self.get(fake, f"/v1/resources/{MODEL}", **{"x-owner-id": ""}).status_code == 400
            assert self.get(fake, f"/v1/resources/{MODEL}", **{"x-api-key": "wrong"}).status_code == 401

    def test_a_resource_given_again_is_replaced_in_place(self):
        with FakeMorphAPI() as fake:
            fake.add("c", "o", MODEL, [{"id": "a", "v": 1}, {"id": "b"}])
            fake.add("c", "o", MODEL, [{"id": "a", "v": 2}])
            assert self.get(fake, f"/v1/resources/{MODEL}").json() == {
                "object": "list",
                "data": [{"id": "a", "v": 2}, {"id": "b"}],
                "next": None,
            }
