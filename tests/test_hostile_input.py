"""Property-based tests: whatever arrives, the answer is a 2xx or a 4xx with a JSON error naming
the problem; never a 5xx, and never a stored row for a rejected request."""

from __future__ import annotations

import copy
import gzip
import json
import math
from typing import Any

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morph_webhooks.events import InvalidEvent
from morph_webhooks.models import IdempotencyKey, Opportunity
from morph_webhooks.parsing import parse_event
from morph_webhooks.testing import morph_headers, opportunity_event
from tests.helpers import SECRET, raw_post

pytestmark = pytest.mark.django_db

URL = f"/webhooks/morph/?token={SECRET}"
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class RawNumber(str):
    """A number written into the body as it is: json.dumps has no float for 1e400."""


# Beyond a double's range: Python's json reads them as infinity.
non_finite = st.builds(
    lambda sign, mantissa, exponent: RawNumber(f"{sign}{mantissa}e{exponent}"),
    st.sampled_from(["", "-"]),
    st.sampled_from(["1", "9.99", "1.7976931348623157"]),
    st.integers(min_value=309, max_value=100_000),
)
# Integers longer than any machine type; still exact JSON that every database keeps.
huge_integers = st.integers(min_value=20, max_value=4000).flatmap(
    lambda digits: st.integers(min_value=10 ** (digits - 1), max_value=10**digits - 1)
) | st.integers(max_value=-(10**20))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.just("\x00")
    | st.just("\ud800")
    | non_finite
    | huge_integers
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def post(client, body: bytes, **kwargs: Any):
    return raw_post(client, body, path=URL, **kwargs)


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
    raw: list[str] = []

    def mark(item: Any) -> Any:
        if isinstance(item, RawNumber):
            raw.append(item)
            return f"@@raw-{len(raw) - 1}@@"
        if isinstance(item, dict):
            return {key: mark(child) for key, child in item.items()}
        if isinstance(item, list):
            return [mark(child) for child in item]
        return item

    text = json.dumps(mark(value), allow_nan=True)
    for index, number in enumerate(raw):
        text = text.replace(f'"@@raw-{index}@@"', number)
    return text.encode("utf-8", errors="surrogatepass")


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
    before = counts()
    assert_handled(post(client, body), before)


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
    before = counts()
    answer = assert_handled(post(client, encode(replaced(path, value))), before)
    if "fields" in answer:
        # The error names the replaced value or something on its way.
        named = " ".join(answer["fields"])
        assert any(str(step) in named for step in path) or "body" in answer["fields"], (path, answer)


# Every place of the body, and places Morph leaves open: extra fields, rawResource, warnings.
OPEN_PATHS = [
    ("data", "fields", "hs_score"),
    ("data", "fields", "hs_list", 0),
    ("data", "fields", "hs_object", "nested"),
    ("data", "rawResource", "deep", 0, "value"),
    ("data", "warnings", 0, "message"),
    ("data", "warnings", 0, "detail"),
    ("top_level",),
]


def replaced(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    event = copy.deepcopy(EVENT)
    target: Any = event
    for step, following in zip(path[:-1], path[1:], strict=True):
        if isinstance(target, list):
            target.extend([{}] * (step + 1 - len(target)))
        elif step not in target or target[step] is None:
            target[step] = [] if isinstance(following, int) else {}
        target = target[step]
    if isinstance(target, list):
        target.extend([None] * (path[-1] + 1 - len(target)))
    target[path[-1]] = value
    return event


@PROPERTY
@given(path=st.sampled_from(EVENT_PATHS + OPEN_PATHS), number=non_finite)
def test_numbers_beyond_a_double_anywhere_are_named(client, path, number):
    before = counts()
    response = post(client, encode(replaced(path, number)))
    answer = assert_handled(response, before)

    assert response.status_code == 400
    assert answer["fields"] == {
        ".".join(map(str, path)): ["A number too large to store; send it as a string."]
    }


@PROPERTY
@given(path=st.sampled_from(OPEN_PATHS[:4]), number=huge_integers)
def test_huge_integers_where_morph_leaves_values_open_are_kept_exactly(client, path, number):
    response = post(client, encode(replaced(path, number)))

    assert response.json() == {"status": "processed"}, response.content
    opportunity = Opportunity.objects.get()
    stored: Any = {"fields": opportunity.extra_fields, "rawResource": opportunity.raw_resource}
    for step in path[1:]:
        stored = stored[step]
    assert stored == number
    opportunity.delete()


@PROPERTY
@given(
    name=st.sampled_from(["x-conector-id", "x-owner-id", "x-idempotency-key"]), value=st.text(max_size=300)
)
def test_arbitrary_header_values(client, name, value):
    before = counts()
    response = post(client, encode(EVENT), **{name: value})
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
        non_finite,
        huge_integers,
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


# What CRMs send as money, and the edges of what a decimal column can give back.
money = st.one_of(
    st.decimals(min_value=0, allow_nan=False, allow_infinity=False).map(str),
    st.decimals(min_value=0, max_value=10**16, places=2).map(str),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=10**20),
    st.sampled_from(["999999999999999999", "999999999999999.5", "999999999999999.4", "123456789012345.678"]),
)


@PROPERTY
@given(amount=money)
def test_accepted_amounts_read_back_equal(admin_client, amount):
    event = copy.deepcopy(EVENT)
    event["data"]["fields"]["amount"] = amount
    try:
        expected = parse_event(morph_headers(), encode(event)).changes["amount"]
    except InvalidEvent as exc:
        assert list(exc.errors) == ["data.fields.amount"]
        return
    assert post(admin_client, encode(event)).json() == {"status": "processed"}

    assert Opportunity.objects.get().amount == expected
    assert admin_client.get(reverse("admin:morph_webhooks_opportunity_changelist")).status_code == 200
    # Later events for the same opportunity read the stored row back too.
    later = opportunity_event("updated", updated_at="2025-03-07T00:00:00Z", fields={"name": "later"})
    assert post(admin_client, encode(later)).json() == {"status": "processed"}
    Opportunity.objects.all().delete()


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
