"""Property-based tests: whatever arrives, the answer is a 2xx or a 4xx with a JSON error naming
the problem; never a 5xx, and never a stored row for a rejected request."""

from __future__ import annotations

import copy
import gzip
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morph_webhooks.models import IdempotencyKey, Opportunity
from morph_webhooks.testing import morph_headers, opportunity_event

pytestmark = pytest.mark.django_db

SECRET = "test-secret-0123456789abcdef"
URL = f"/webhooks/morph/?token={SECRET}"
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.just("\x00") | st.just("\ud800")
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def post(client, body: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json"):
    return client.post(
        URL, data=body, content_type=content_type, headers={**morph_headers(), **(headers or {})}
    )


def assert_handled(response, before: tuple[int, int]) -> dict[str, Any]:
    assert response.status_code < 500, response.content
    assert response["Content-Type"] == "application/json"
    answer = response.json()
    if response.status_code >= 400:
        assert answer["error"]
        assert answer.get("fields") or answer.get("detail")
        assert (Opportunity.objects.count(), IdempotencyKey.objects.count()) == before
    return answer


def counts() -> tuple[int, int]:
    return Opportunity.objects.count(), IdempotencyKey.objects.count()


def encode(value: Any) -> bytes:
    # Python's encoder writes NaN/Infinity and lone surrogates; Morph's JSON parser would not,
    # but an attacker may send them: that is the point.
    return json.dumps(value, allow_nan=True).encode("utf-8", errors="surrogatepass")


@PROPERTY
@given(body=json_values)
def test_arbitrary_json(client, body):
    before = counts()
    response = post(client, encode(body))
    assert_handled(response, before)
    assert response.status_code == 400  # nothing random is a valid event


@PROPERTY
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes(client, body):
    assert_handled(post(client, body), counts())


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


EVENT = opportunity_event()
EVENT_PATHS = paths(EVENT)


@PROPERTY
@given(path=st.sampled_from(EVENT_PATHS), value=json_values)
def test_one_value_replaced_by_anything(client, path, value):
    event = copy.deepcopy(EVENT)
    target = event
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    before = counts()
    answer = assert_handled(post(client, encode(event)), before)
    if "fields" in answer:
        # The error names the replaced value or something on its way.
        named = " ".join(answer["fields"])
        assert any(str(step) in named for step in path) or "body" in answer["fields"], (path, answer)


@PROPERTY
@given(
    name=st.sampled_from(["x-conector-id", "x-owner-id", "x-idempotency-key"]), value=st.text(max_size=300)
)
def test_arbitrary_header_values(client, name, value):
    before = counts()
    response = post(client, encode(EVENT), headers={name: value})
    answer = assert_handled(response, before)
    if response.status_code == 400:
        assert name in answer["fields"]


@PROPERTY
@given(
    amount=st.one_of(
        st.floats(),
        st.integers(),
        st.text(max_size=30),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "1e-400", "-0"]),
    )
)
def test_arbitrary_amounts(client, amount):
    event = copy.deepcopy(EVENT)
    event["data"]["fields"]["amount"] = amount
    answer = assert_handled(post(client, encode(event)), counts())
    if "fields" in answer:
        # NaN and Infinity are not JSON at all: the parser refuses the body before any field.
        non_json = isinstance(amount, float) and not math.isfinite(amount)
        assert set(answer["fields"]) == ({"body"} if non_json else {"data.fields.amount"})


@PROPERTY
@given(
    updated_at=st.one_of(
        st.text(max_size=40),
        st.datetimes().map(lambda d: d.isoformat()),
        st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2025-02-30T00:00:00Z"]),
    )
)
def test_arbitrary_timestamps(client, updated_at):
    event = copy.deepcopy(EVENT)
    event["data"]["updatedAt"] = updated_at
    answer = assert_handled(post(client, encode(event)), counts())
    if "fields" in answer:
        assert set(answer["fields"]) == {"data.updatedAt"}


def test_huge_and_deep_values(client):
    before = counts()
    deep = b'{"event": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert_handled(post(client, deep), before)
    wide = copy.deepcopy(EVENT)
    wide["data"]["fields"]["contacts"] = [{"object": "resourceRef", "id": str(i)} for i in range(20_000)]
    assert post(client, encode(wide)).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_wrong_content_types(client, content_type):
    response = post(client, encode(EVENT), content_type=content_type)
    assert response.status_code == 415
    assert content_type.split(";")[0] in response.json()["detail"]


def test_gzip_body_is_refused_with_a_clear_error(client):
    response = client.post(
        URL,
        data=gzip.compress(encode(EVENT)),
        content_type="application/json",
        headers={**morph_headers(), "Content-Encoding": "gzip"},
    )

    assert response.status_code == 415
    assert "gzip" in response.json()["detail"]
    assert counts() == (0, 0)
