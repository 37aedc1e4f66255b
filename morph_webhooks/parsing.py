"""Turning one request (headers and raw body) into a validated :class:`MorphEvent`, and a resource
read from Morph's REST API into a :class:`ResourceEvent`; or, either way, an :class:`InvalidEvent`
naming every bad field."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, TypedDict

from django.db import models

from .conf import conf
from .events import InvalidEvent, MorphEvent, ResourceEvent
from .resources.base import ACTIONS, ID_LENGTH, ResourceSpec
from .resources.registry import REGISTRY
from .serializers import (
    EnvelopeSerializer,
    HeadersSerializer,
    ResourceDataSerializer,
    ResourceSerializer,
    prepared,
    validate,
)
from .text import encodable, is_storable

# Deeper JSON is refused: nothing Morph sends comes close, and it would strain the encoders later.
MAX_DEPTH = 64

# Morph's header names; "x-conector-id" is Morph's own spelling, the correct one is accepted too.
CONNECTOR_HEADERS = ("x-conector-id", "x-connector-id")
HEADER_NAMES = {
    "connector_id": CONNECTOR_HEADERS[0],
    "owner_id": "x-owner-id",
    "idempotency_key": "x-idempotency-key",
}
# What Morph puts in an event and in its ``data``; anything else is ignored and reported, not
# refused: a key Morph adds tomorrow must not turn every event into a 400 that it retries forever.
ENVELOPE_KEYS = frozenset({"event", "data"})
RESOURCE_KEYS = frozenset(
    {"object", "model", "id", "fields", "createdAt", "updatedAt", "remote", "rawResource", "warnings"}
)

# Built once, shared by every request and thread (see serializers.validate).
HEADERS = prepared(HeadersSerializer())
# context["mirrored"] is the registry itself: a model registered later is mirrored too.
ENVELOPE = prepared(EnvelopeSerializer(context={"mirrored": REGISTRY}))
RESOURCE = prepared(ResourceSerializer())
_RESOURCE_DATA: dict[tuple[str, str], ResourceDataSerializer] = {}


class Headers(TypedDict):
    connector_id: str
    owner_id: str
    idempotency_key: str


def parse_event(headers: Mapping[str, str], body: bytes) -> MorphEvent:
    """Validate headers (lower-case names) and body together, reporting every problem at once."""
    errors: dict[str, list[str]] = {}
    header_values = _read_headers(headers, errors)
    try:
        payload = load_json(body)
    except InvalidEvent as exc:
        raise InvalidEvent(errors | exc.errors) from None

    envelope, envelope_errors = validate(ENVELOPE, payload)
    if envelope_errors:
        errors |= flatten_errors(envelope_errors)
    data = payload.get("data")
    # "<model>::<action>" is split here once; the envelope has checked its shape when errors is empty.
    model, _, action = str(payload.get("event")).partition("::")
    # The event's model, or data's when the event type is wrong, so one answer names every bad field.
    spec = REGISTRY.get(model) or (REGISTRY.get(str(data.get("model"))) if isinstance(data, dict) else None)
    if spec is not None and isinstance(data, dict):
        event = _resource_event(spec, action, data, "data", header_values, errors)
        if event is not None and not errors:
            return replace(
                event,
                remote_id=envelope["data"]["id"],
                payload=payload,
                ignored_keys=ignored_keys(payload),
            )
    if errors:
        raise InvalidEvent(errors)
    return MorphEvent(
        model=model,
        action=action,
        remote_id=envelope["data"]["id"],
        payload=payload,
        ignored_keys=ignored_keys(payload),
        **header_values,
    )


def parse_resource(spec: ResourceSpec, data: Any, connector_id: str, owner_id: str) -> ResourceEvent:
    """A resource of ``spec``'s model read from Morph's REST API (shaped like a webhook's
    ``data``), validated by the same rules, as the ``updated`` event of a sync; raises InvalidEvent."""
    if not isinstance(data, dict):
        raise InvalidEvent({"data": [f"Expected a resource object, got {type(data).__name__}."]})
    _check_storable(data)
    _check_size(data)
    errors: dict[str, list[str]] = {}
    resource, resource_errors = validate(RESOURCE, data)
    if resource_errors:
        errors |= flatten_errors(resource_errors, prefix="data")
    elif resource["model"] != spec.morph_model:
        errors["data.model"] = [f'Expected "{spec.morph_model}", the model that was listed.']
    headers = Headers(connector_id=connector_id, owner_id=owner_id, idempotency_key="")
    event = _resource_event(spec, "updated", data, "data", headers, errors)
    if event is None or errors:
        raise InvalidEvent(errors)
    return _from_sync(event)


def _from_sync(event: ResourceEvent) -> ResourceEvent:
    return replace(event, source="sync", related=tuple(_from_sync(related) for related in event.related))


def ignored_keys(payload: dict[str, Any]) -> tuple[str, ...]:
    """The keys of the envelope and of ``data`` that Morph does not send: a typo such as
    ``data.fileds`` must show up somewhere rather than vanish."""
    data = payload["data"]
    return (
        *(key for key in payload if key not in ENVELOPE_KEYS),
        *(f"data.{key}" for key in data if key not in RESOURCE_KEYS),
    )


def _resource_event(
    spec: ResourceSpec,
    action: str,
    data: dict[str, Any],
    path: str,
    header_values: Headers,
    errors: dict[str, list[str]],
    within: tuple[tuple[str, str], ...] = (),
) -> ResourceEvent | None:
    """The event for ``data`` (a resource of ``spec``'s model at ``path`` in the body), with an
    event for each expanded reference it carries; None, with ``errors`` told why, if invalid.
    ``within`` holds the (model, id) of the resources that carry ``data`` expanded."""
    valid, resource_errors = validate(resource_data_serializer(spec, action), data)
    if resource_errors:
        errors |= flatten_errors(resource_errors, prefix=path)
        return None
    changes = {name: _stored_value(spec, name, value) for name, value in (valid.get("fields") or {}).items()}
    sent_fields = data.get("fields") or {}
    extra = {key: value for key, value in sent_fields.items() if key not in spec.field_names}
    if extra:
        changes["extra_fields"] = extra
    if "rawResource" in valid:
        changes["raw_resource"] = valid["rawResource"]
    if "warnings" in valid:
        changes["warnings"] = data["warnings"] or []
    own = (spec.morph_model, str(data.get("id")))
    related: list[ResourceEvent] = []
    for reference_path, reference in _expanded_references(spec, sent_fields, f"{path}.fields", errors):
        if (reference["model"], str(reference["id"])) in (own, *within):
            # The resource itself, or one that carries it: this event is its version; a copy
            # nested in it is kept as sent, not stored over it.
            continue
        expanded = _reference_event(reference, reference_path, header_values, errors, (own, *within))
        if expanded is not None:
            # Deeper expansions first: each resource is stored before the one that carries it.
            related += [*expanded.related, replace(expanded, related=())]
    return ResourceEvent(
        spec=spec,
        model=spec.morph_model,
        action=action,
        # Validated by the caller: the envelope, the listed resource or the reference's own check.
        remote_id=own[1],
        payload=data,
        remote_created_at=valid["createdAt"],
        remote_updated_at=valid["updatedAt"],
        changes=changes,
        related=tuple(related),
        **header_values,
    )


def _reference_event(
    reference: dict[str, Any],
    path: str,
    header_values: Headers,
    errors: dict[str, list[str]],
    within: tuple[tuple[str, str], ...],
) -> ResourceEvent | None:
    """The ``updated`` event of an expanded reference at ``path``, validated as an event of its
    model is (its id included, which no column may have checked: ``fields.customRef``); None,
    with ``errors`` told why, if invalid."""
    _, resource_errors = validate(RESOURCE, reference)
    if resource_errors:
        errors |= flatten_errors(resource_errors, prefix=path)
        return None
    spec = REGISTRY[reference["model"]]
    return _resource_event(spec, "updated", reference, path, header_values, errors, within)


def resource_data_serializer(spec: ResourceSpec, action: str) -> ResourceDataSerializer:
    """The serializer of ``data`` for ``spec``'s model and ``action``, built once for each of
    Morph's actions."""
    key = (spec.morph_model, action)
    serializer = _RESOURCE_DATA.get(key)
    if serializer is None or serializer.context["spec"] is not spec:
        serializer = prepared(ResourceDataSerializer(context={"spec": spec, "action": action}))
        # Any other action comes from a body refused for it: keeping those would let a sender
        # grow this without bound.
        if action in ACTIONS:
            _RESOURCE_DATA[key] = serializer
    return serializer


# Built now rather than by the first event of each kind, which would pay for it.
for _spec in REGISTRY.values():
    for _action in ACTIONS:
        resource_data_serializer(_spec, _action)


def _expanded_references(
    spec: ResourceSpec, fields: dict[str, Any], path: str, errors: dict[str, list[str]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The references among ``fields`` (of ``spec``'s model) that Morph expanded into a resource
    the app mirrors, with a version to order it by. One without ``createdAt``/``updatedAt`` cannot
    be ordered: only its id is kept, as for any reference. A reference of another model than its
    field's (``stage`` naming a ``genericUser``) is told in ``errors``."""
    for name, value in fields.items():
        expected = spec.reference_models.get(name)
        for index, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if not isinstance(item, dict):
                continue
            item_path = f"{path}.{name}" if index is None else f"{path}.{name}.{index}"
            if expected is not None and "model" in item and item["model"] != expected:
                errors[f"{item_path}.model"] = [f'Expected "{expected}", the model this field refers to.']
            elif (
                item.get("object") == "resource"
                and isinstance(item.get("model"), str)
                and item["model"] in REGISTRY
                and "id" in item
                and "createdAt" in item
                and "updatedAt" in item
            ):
                yield item_path, item


def expanded_keys(spec: ResourceSpec, data: Any) -> Iterator[tuple[str, str]]:
    """The (Morph model, id) of each resource that ``data`` (a resource of ``spec``'s model, as
    Morph sends it) carries expanded, at any depth, read before ``data`` is validated: the rows
    that storing it may lock. Ids that cannot be one are left out: nothing is stored for them."""
    fields = data.get("fields") if isinstance(data, dict) else None
    if not isinstance(fields, dict):
        return
    for _, reference in _expanded_references(spec, fields, "", {}):
        remote_id = reference["id"]
        if isinstance(remote_id, int) and not isinstance(remote_id, bool):
            remote_id = str(remote_id)
        if lookup_id(remote_id) is not None:
            yield reference["model"], remote_id
            yield from expanded_keys(REGISTRY[reference["model"]], reference)


def lookup_id(remote_id: Any) -> str | None:
    """``remote_id``, read before it is validated, when it is an id the database can be asked
    for (text within ID_LENGTH that every database can store); None otherwise: PostgreSQL fails
    the whole transaction on a NUL, and no such resource is stored anyway."""
    if isinstance(remote_id, str) and len(remote_id) <= ID_LENGTH and is_storable(remote_id):
        return remote_id
    return None


def _stored_value(spec: ResourceSpec, name: str, value: Any) -> Any:
    # null clears a field; columns that cannot hold NULL get their empty value instead.
    model_field = spec.model._meta.get_field(name)
    assert isinstance(model_field, models.Field)
    return model_field.get_default() if value is None and not model_field.null else value


def connector_header(headers: Mapping[str, str]) -> str | None:
    """The connector id from Morph's misspelled header or the correctly spelled one."""
    return next((headers[name] for name in CONNECTOR_HEADERS if name in headers), None)


def _read_headers(headers: Mapping[str, str], errors: dict[str, list[str]]) -> Headers:
    connector = connector_header(headers)
    if len({headers[name] for name in CONNECTOR_HEADERS if name in headers}) > 1:
        # Picking one would file the event under a connector the sender may not have meant.
        errors[CONNECTOR_HEADERS[1]] = [f"Differs from {CONNECTOR_HEADERS[0]}: send one connector id."]
    data = {
        "connector_id": connector,
        "owner_id": headers.get("x-owner-id"),
        "idempotency_key": headers.get("x-idempotency-key"),
    }
    valid, header_errors = validate(HEADERS, {key: value for key, value in data.items() if value is not None})
    if not header_errors:
        return Headers(
            connector_id=valid["connector_id"],
            owner_id=valid["owner_id"],
            idempotency_key=valid["idempotency_key"],
        )
    # Named as sent: Morph's spelling, unless only the correct one came.
    sent = next((name for name in CONNECTOR_HEADERS if name in headers), CONNECTOR_HEADERS[0])
    names = {**HEADER_NAMES, "connector_id": sent}
    for name, messages in header_errors.items():
        errors[names[name]] = [str(message) for message in messages]
    # Placeholders: an event may still be built with them, so that one answer names every bad
    # field, but the errors recorded above make parse_event raise instead of returning it.
    return Headers(connector_id="", owner_id="", idempotency_key="")


def load_json(body: bytes) -> Any:
    """Parse a JSON body strictly: what passes here can be stored in any database."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent({"body": [f"Not valid UTF-8 (byte {exc.start})."]}) from None
    if not text.strip():
        raise InvalidEvent({"body": ["Empty body; expected a JSON object."]})
    infinite: list[float] = []

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            infinite.append(value)
        return value

    try:
        payload = json.loads(
            text, object_pairs_hook=unique_keys, parse_constant=_reject_constant, parse_float=number
        )
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent({"body": [f"Not valid JSON: {exc}"]}) from None
    if not isinstance(payload, dict):
        raise InvalidEvent({"body": [f"Expected a JSON object, got {type(payload).__name__}."]})
    # What could not be stored shows in the text, and most bodies have none of it: an escape (only
    # \u0000 or \ud800 puts a NUL or a lone surrogate in a string: the parser refuses raw control
    # characters, the UTF-8 decoder surrogates), a number beyond a double's range, or deep nesting
    # (each level opens a bracket).
    if "\\u" in text or infinite or text.count("{") + text.count("[") >= MAX_DEPTH:
        _check_storable(payload)
    return payload


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) < len(pairs):
        # Parsers disagree on which of two equal keys wins; refusing is the only safe reading.
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _check_storable(payload: dict[str, Any]) -> None:
    """Refuse what no database can store (NUL, lone surrogates, numbers beyond a double's range)
    and excessive nesting."""
    if _plainly_storable(payload):
        return
    # Walked again, this time naming where the problem is.
    stack: list[tuple[str, Any, int]] = [("", payload, 1)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidEvent({path or "body": [f"Nested deeper than {MAX_DEPTH} levels."]})
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else key
                _check_text(child, key)
                stack.append((child, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}", item, depth + 1) for index, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(path, value)
        elif isinstance(value, float) and not math.isfinite(value):
            # json reads a number beyond a double's range (1e400) as infinity, which no database
            # column for JSON can store; integers of any length are kept exactly instead.
            raise InvalidEvent({path: ["A number too large to store; send it as a string."]})


def _check_size(data: dict[str, Any]) -> None:
    """Refuse a resource larger, as JSON, than a webhook's whole body may be (MAX_BODY_SIZE): read
    from Morph's API rather than received, it would otherwise be stored whatever its size."""
    size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())
    if size > conf.MAX_BODY_SIZE:
        raise InvalidEvent(
            {"data": [f"{size} bytes as JSON, over MAX_BODY_SIZE ({conf.MAX_BODY_SIZE}), a webhook's limit."]}
        )


def _plainly_storable(payload: dict[str, Any]) -> bool:
    """Whether :func:`_check_storable` would find nothing: the same walk, without the paths that
    only an error needs. False means "maybe not", never a wrong yes: deep nesting is left to it."""
    pending: list[dict[str, Any] | list[Any]] = [payload]
    depths = [1]
    while pending:
        container, depth = pending.pop(), depths.pop()
        if depth >= MAX_DEPTH:
            return False
        if isinstance(container, dict):
            if not all(map(is_storable, container)):
                return False
            items: Iterable[Any] = container.values()
        else:
            items = container
        for item in items:
            if isinstance(item, (dict, list)):
                pending.append(item)
                depths.append(depth + 1)
            elif isinstance(item, str):
                if not is_storable(item):
                    return False
            elif isinstance(item, float) and not math.isfinite(item):
                return False
    return True


def _check_text(path: str, text: str) -> None:
    if "\x00" in text:
        raise InvalidEvent({path: ["Contains a NUL character, which cannot be stored."]})
    if not encodable(text):
        raise InvalidEvent({path: ["Contains an unpaired surrogate, which cannot be stored."]})


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure as ``{"data.fields.amount": [...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            for path, messages in flatten_errors(value, name).items():
                flat.setdefault(path, []).extend(messages)
    elif isinstance(errors, list) and errors and all(isinstance(item, str) for item in errors):
        flat[prefix or "body"] = [str(item) for item in errors]
    elif isinstance(errors, list):
        for index, value in enumerate(errors):
            if value:
                flat |= flatten_errors(value, f"{prefix}.{index}")
    return flat
