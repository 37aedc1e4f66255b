from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from rest_framework.serializers import Serializer

from morph_webhooks.events import InvalidEvent
from morph_webhooks.parsing import parse_event
from morph_webhooks.serializers import HeadersSerializer
from morph_webhooks.testing import morph_headers, opportunity_event, reference, resource_event

HEADERS = morph_headers("key-1")


def parse(payload: Any, headers: dict[str, str] = HEADERS):
    return parse_event(headers, payload if isinstance(payload, bytes) else json.dumps(payload).encode())


def errors_of(payload: Any, headers: dict[str, str] = HEADERS) -> dict[str, list[str]]:
    with pytest.raises(InvalidEvent) as info:
        parse(payload, headers)
    return info.value.errors


def with_fields(**fields: Any) -> dict[str, Any]:
    return opportunity_event(fields=fields)


def test_event_carries_headers_and_payload():
    payload = opportunity_event("updated", "opp_9")
    event = parse(payload)

    assert (event.type, event.connector_id, event.owner_id, event.idempotency_key, event.remote_id) == (
        "crmOpportunity::updated",
        "hubspot",
        "tenant_1",
        "key-1",
        "opp_9",
    )
    assert event.payload == payload


@pytest.mark.parametrize(
    ("amount", "stored"),
    [
        (12500, Decimal("12500")),
        (19.99, Decimal("19.99")),
        ("1234.5", Decimal("1234.5")),
        ("0", Decimal("0")),
        # What an empty CRM amount often looks like: no amount, not an error.
        ("", None),
        (0.1234567, Decimal("0.123457")),
        (None, None),
    ],
)
def test_amount_as_number_or_numeric_string(amount, stored):
    assert parse(with_fields(amount=amount)).changes["amount"] == stored


@pytest.mark.parametrize(
    "amount", [-1, "-0.01", "abc", True, [1], {"v": 1}, "NaN", "Infinity", "1e400", 1e30]
)
def test_amount_rejected(amount):
    assert "data.fields.amount" in errors_of(with_fields(amount=amount))


@pytest.mark.parametrize("name", ["", "x" * 251, True, ["x"], {"x": 1}])
def test_name_rejected(name):
    assert "data.fields.name" in errors_of(with_fields(name=name))


@pytest.mark.parametrize("name", ["x", "x" * 250, "  spaced  ", "Crème brûlée 🍮"])
def test_name_accepted(name):
    assert parse(with_fields(name=name)).changes["name"] == name


def test_currency_is_three_letters_stored_upper_case():
    assert parse(with_fields(currency="eur")).changes["currency"] == "EUR"
    for bad in ("EURO", "EU", "12$", 978):
        assert "data.fields.currency" in errors_of(with_fields(currency=bad))


@pytest.mark.parametrize(
    "shape",
    [
        lambda model: reference(model, "won"),
        lambda model: {"object": "resource", "model": model, "id": "won", "fields": {"name": "Won"}},
        lambda model: {"id": "won"},
        lambda model: "won",
    ],
)
def test_reference_shapes(shape):
    contact = shape("genericContact")
    changes = parse(
        with_fields(
            stage=shape("crmStage"),
            pipeline=shape("crmPipeline"),
            owner=shape("genericUser"),
            contacts=[contact, contact],
        )
    ).changes
    assert (changes["stage_id"], changes["pipeline_id"], changes["crm_owner_id"], changes["contact_ids"]) == (
        "won",
        "won",
        "won",
        ["won", "won"],
    )


def test_numeric_reference_id_becomes_a_string():
    assert parse(with_fields(owner=75938210)).changes["crm_owner_id"] == "75938210"


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("stage", {"object": "resourceRef", "model": "crmStage"}, "data.fields.stage"),
        ("stage", {"object": "weird", "id": "1"}, "data.fields.stage"),
        ("stage", "", "data.fields.stage"),
        ("stage", "x" * 256, "data.fields.stage"),
        ("stage", 1.5, "data.fields.stage"),
        ("owner", ["a"], "data.fields.owner"),
        ("contacts", "c1", "data.fields.contacts"),
        ("companies", [reference("genericCompany", "ok"), {"no": "id"}], "data.fields.companies.1"),
    ],
)
def test_reference_rejected(field, value, path):
    assert path in errors_of(with_fields(**{field: value}))


def test_only_fields_present_are_changes():
    assert set(parse(with_fields(name="x")).changes) == {"name", "raw_resource", "warnings"}
    payload = opportunity_event("deleted")
    del payload["data"]["fields"], payload["data"]["rawResource"], payload["data"]["warnings"]
    assert parse(payload).changes == {}


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: p.update(event="crmOpportunity::merged"), "event"),
        (lambda p: p.update(event="crmOpportunity"), "event"),
        (lambda p: p.pop("event"), "event"),
        (lambda p: p.update(event="genericContact::created"), "data.model"),
        (lambda p: p.pop("data"), "data"),
        (lambda p: p.update(data="x"), "data"),
        (lambda p: p["data"].update(object="resourceRef"), "data.object"),
        (lambda p: p["data"].update(model="crmDeal"), "data.model"),
        (lambda p: p["data"].pop("id"), "data.id"),
        (lambda p: p["data"].update(id=""), "data.id"),
        (lambda p: p["data"].update(createdAt="yesterday"), "data.createdAt"),
        (lambda p: p["data"].pop("updatedAt"), "data.updatedAt"),
        (lambda p: p["data"].update(updatedAt="2025-13-45T00:00:00Z"), "data.updatedAt"),
        (lambda p: p["data"].update(fields=[]), "data.fields"),
        (lambda p: p["data"].update(warnings=[{"message": "no code"}]), "data.warnings.0.code"),
        (lambda p: p["data"].update(warnings="x"), "data.warnings"),
    ],
)
def test_envelope_rules(mutate, path):
    payload = copy.deepcopy(opportunity_event())
    mutate(payload)
    assert path in errors_of(payload)


def test_every_bad_field_is_named_at_once():
    payload = opportunity_event(fields={"amount": -1, "currency": "EURO"})
    payload["data"]["object"] = "x"
    errors = errors_of(payload, headers={"x-owner-id": "t"})

    assert set(errors) == {
        "x-conector-id",
        "x-idempotency-key",
        "data.object",
        "data.fields.amount",
        "data.fields.currency",
    }


def test_naive_timestamp_is_read_as_utc():
    event = parse(opportunity_event(updated_at="2025-03-06T09:15:04"))
    assert event.remote_updated_at.isoformat() == "2025-03-06T09:15:04+00:00"


def test_offset_timestamp_is_converted_to_utc():
    event = parse(opportunity_event(updated_at="2025-03-06T10:15:04+01:00"))
    assert event.remote_updated_at.isoformat() == "2025-03-06T09:15:04+00:00"


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        ({"x-owner-id": "t", "x-idempotency-key": "k"}, "x-conector-id"),
        ({"x-conector-id": "c", "x-idempotency-key": "k"}, "x-owner-id"),
        ({"x-conector-id": "c", "x-owner-id": "t"}, "x-idempotency-key"),
        ({"x-conector-id": "c", "x-owner-id": "t", "x-idempotency-key": "k" * 256}, "x-idempotency-key"),
        ({"x-conector-id": " ", "x-owner-id": "t", "x-idempotency-key": "k"}, "x-conector-id"),
    ],
)
def test_headers_required_and_bounded(headers, name):
    assert name in errors_of(opportunity_event(), headers=headers)


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        (b"", "body", "Empty"),
        (b"not json", "body", "Not valid JSON"),
        (b"[1, 2]", "body", "JSON object"),
        (b'"text"', "body", "JSON object"),
        (b"\xff\xfe{}", "body", "UTF-8"),
        (b'{"event": "a", "event": "b"}', "body", "duplicate key 'event'"),
        (b'{"amount": NaN}', "body", "NaN"),
        (b'{"amount": Infinity}', "body", "Infinity"),
        (b'{"data": {"fields": {"name": "a\\u0000b"}}}', "data.fields.name", "NUL"),
        (b'{"data": {"k\\u0000": 1}}', "data.k\x00", "NUL"),
        (b'{"data": {"rawResource": ["\\ud800"]}}', "data.rawResource.0", "surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "body", ""),
        (b'{"a":' * 70 + b"1" + b"}" * 70, "a.a.a", "Nested deeper"),
    ],
)
def test_hostile_bodies_are_named_errors(body, path, fragment):
    errors = errors_of(body)
    matching = [key for key in errors if key.startswith(path)]
    assert matching, errors
    assert fragment in " ".join(errors[matching[0]])


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["fields"].update(amount="AMOUNT"), "data.fields.amount"),
        (lambda d: d["fields"].update(hs_score="AMOUNT"), "data.fields.hs_score"),
        (lambda d: d["fields"].update(hs_list=[1, "AMOUNT"]), "data.fields.hs_list.1"),
        (lambda d: d["fields"].update(hs_object={"v": {"w": "AMOUNT"}}), "data.fields.hs_object.v.w"),
        (lambda d: d.update(rawResource={"score": "AMOUNT"}), "data.rawResource.score"),
        (lambda d: d.update(warnings=[{"code": "x", "message": "AMOUNT"}]), "data.warnings.0.message"),
        (lambda d: d.update(id="AMOUNT"), "data.id"),
    ],
)
@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5e999"])
def test_numbers_beyond_a_double_are_named_errors(mutate, path, number):
    payload = opportunity_event()
    mutate(payload["data"])
    # json.dumps cannot write 1e400 (it has no float for it), so the number goes in as text.
    body = json.dumps(payload).replace('"AMOUNT"', number).encode()

    assert errors_of(body) == {path: ["A number too large to store; send it as a string."]}


def test_integers_of_any_length_are_kept_exactly():
    huge = 10**400 + 1
    event = parse(with_fields(hs_big=huge, hs_negative=-huge))
    assert event.changes["extra_fields"] == {"hs_big": huge, "hs_negative": -huge}


@pytest.mark.parametrize(
    ("amount", "stored"),
    [
        (999999999999999, Decimal("999999999999999")),
        ("123456789012.3456789", Decimal("123456789012.346")),
        (123456789.12345678, Decimal("123456789.123457")),
        ("0.0000004", Decimal("0")),
    ],
)
def test_amount_keeps_at_most_15_significant_digits(amount, stored):
    assert parse(with_fields(amount=amount)).changes["amount"] == stored


@pytest.mark.parametrize("amount", [999999999999999999, 1e15, "1000000000000000", "999999999999999.5"])
def test_amount_beyond_15_whole_digits_is_rejected(amount):
    assert errors_of(with_fields(amount=amount)) == {
        "data.fields.amount": ["Ensure that there are no more than 15 digits before the decimal point."]
    }


@pytest.mark.parametrize("action", ["created", "updated"])
@pytest.mark.parametrize("fields", ["missing", None])
def test_created_or_updated_without_fields_is_rejected(action, fields):
    payload = opportunity_event(action)
    if fields == "missing":
        payload["data"]["fileds"] = payload["data"].pop("fields")
    else:
        payload["data"]["fields"] = fields

    assert errors_of(payload) == {
        "data.fields": [f"Required for a crmOpportunity::{action} event; only a delete may leave it out."]
    }


@pytest.mark.parametrize("fields", ["missing", None, {}])
def test_deleted_needs_no_fields(fields):
    payload = opportunity_event("deleted")
    if fields == "missing":
        del payload["data"]["fields"]
    else:
        payload["data"]["fields"] = fields

    assert parse(payload).changes == {"raw_resource": None, "warnings": []}


def test_keys_morph_does_not_send_are_named_as_ignored():
    payload = opportunity_event(fileds={"name": "typo"}, remote={"id": "1"})
    payload["extra"] = 1
    assert parse(payload).ignored_keys == ("extra", "data.fileds")
    assert parse(opportunity_event()).ignored_keys == ()
    contact = copy.deepcopy(payload)
    contact["event"], contact["data"]["model"] = "telephonyCall::created", "telephonyCall"
    assert parse(contact).ignored_keys == ("extra", "data.fileds")


@pytest.mark.parametrize("name", ["x-conector-id", "x-connector-id", "x-owner-id", "x-idempotency-key"])
def test_header_sent_twice_is_rejected(name):
    # Servers join repeated header lines with a comma (gunicorn and Django's WSGI handler alike).
    headers = {**HEADERS, name: "tenant_1,tenant_2"}
    if name == "x-connector-id":
        del headers["x-conector-id"]

    assert errors_of(opportunity_event(), headers=headers) == {
        name: ["Sent more than once, or contains a comma: send one value."]
    }


def test_both_connector_spellings_must_agree():
    same = parse(opportunity_event(), headers={**HEADERS, "x-connector-id": "hubspot"})
    assert same.connector_id == "hubspot"

    errors = errors_of(opportunity_event(), headers={**HEADERS, "x-connector-id": "pipedrive"})
    assert errors == {"x-connector-id": ["Differs from x-conector-id: send one connector id."]}


def test_timestamp_digits_below_a_microsecond_are_dropped():
    event = parse(opportunity_event(updated_at="2025-03-06T09:15:04.5961239Z"))
    assert event.remote_updated_at.isoformat() == "2025-03-06T09:15:04.596123+00:00"


def concurrent_samples() -> list[tuple[dict[str, str], bytes]]:
    valid = [opportunity_event("updated", f"opp_{index}", fields={"amount": index}) for index in range(5)]
    invalid = [
        with_fields(amount="lots"),
        with_fields(currency="EURO", stage={"object": "other"}),
        opportunity_event("created", fields=None) | {"data": {"object": "resource"}},
        {"event": "crmOpportunity::moved", "data": {"object": "resource", "model": "crmOpportunity"}},
        resource_event("crmStage", "created", "stage_1", fields={"type": "MAYBE"}),
        resource_event("genericUser", "deleted", "user_1", fields=None),
    ]
    bodies = [json.dumps(payload).encode() for payload in valid + invalid]
    headers = [HEADERS, morph_headers("key-2", owner_id="a,b"), {"x-owner-id": "tenant_1"}]
    return [(header, body) for header in headers for body in bodies]


def outcome(headers: dict[str, str], body: bytes) -> Any:
    try:
        event = parse_event(headers, body)
    except InvalidEvent as exc:
        return exc.errors
    return (event.type, event.remote_id, dict(event.changes), event.remote_updated_at)


def test_one_set_of_serializers_validates_for_many_threads_at_once():
    # The serializers are built once and shared (serializers.validate): concurrent requests in a
    # threaded server must each get their own answer, as they would one at a time.
    samples = concurrent_samples()
    expected = [outcome(headers, body) for headers, body in samples]
    assert any(isinstance(result, dict) for result in expected)
    assert any(isinstance(result, tuple) for result in expected)
    rounds = 20
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda sample: outcome(*sample), samples * rounds))
    assert results == expected * rounds


def test_parsing_an_event_builds_no_serializer_fields():
    # An expanded stage: its own resource is validated too.
    stage = resource_event("crmStage", "updated", "stage_9", fields={"name": "Won", "type": "WON"})["data"]
    body = json.dumps(
        opportunity_event(fields={**opportunity_event()["data"]["fields"], "stage": stage})
    ).encode()
    assert len(parse_event(HEADERS, body).related) == 1
    with mock.patch.object(
        Serializer, "get_fields", autospec=True, side_effect=Serializer.get_fields
    ) as built:
        parse_event(HEADERS, body)
        parse_event(HEADERS, json.dumps(resource_event("crmStage", "deleted", "stage_2")).encode())
    assert built.call_count == 0


@pytest.mark.parametrize("owner", ["tenant_\ud800", "tenant_é\udfff", "tenant_é", "tenant_\U0001f600"])
def test_shared_serializers_answer_as_drf_does(owner):
    # The shared serializers check strings for surrogates faster than DRF, with DRF's answers.
    headers = {**HEADERS, "x-owner-id": owner}
    fresh = HeadersSerializer(data={"connector_id": "hubspot", "owner_id": owner, "idempotency_key": "k"})
    expected = {} if fresh.is_valid() else {"x-owner-id": [str(error) for error in fresh.errors["owner_id"]]}

    result = outcome(headers, json.dumps(opportunity_event()).encode())

    assert (result if isinstance(result, dict) else {}) == expected
