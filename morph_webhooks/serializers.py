"""The DRF serializers of what Morph sends around a resource's fields: headers, the event
envelope, and the ``data`` every resource has; built once and shared by the parser
(:mod:`.parsing`, the only module that imports this one). Each model's ``data.fields`` is
validated by its own serializer, in :mod:`.resources`.

Morph's documentation and its real payloads disagree (see "What Morph sends" in
docs/guides/events.md); these accept both shapes and nothing else.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from .resources.base import ACTIONS, ID_LENGTH
from .resources.fields import IdField, TimestampField
from .text import encodable

# Morph documents ``fields`` as required. A delete needs none, but a create or an update without
# them (a typo such as "fileds") would store or change nothing while answering "processed".
ACTIONS_WITH_FIELDS = ("created", "updated")
# Morph event types are "<model>::<action>"; models the app does not mirror are acknowledged.
EVENT_TYPE = re.compile(r"^(?P<model>[A-Za-z][A-Za-z0-9]*)::(?P<action>[A-Za-z]+)$")

S = TypeVar("S", bound="serializers.Serializer[Any]")


class ProhibitSurrogateCharacters(ProhibitSurrogateCharactersValidator):
    """DRF's check of every string field, which loops over each character in Python: text without
    a surrogate, nearly all, is told apart in C first; with one, DRF's says which."""

    def __call__(self, value: Any) -> None:
        if not encodable(str(value)):
            super().__call__(value)


def prepared(serializer: S) -> S:
    """``serializer`` with every field it holds built, to be shared (see :func:`validate`): DRF
    deep-copies a serializer's declared fields into each instance and builds nested ones when first
    used, which cost more than the validation itself."""
    pending: list[serializers.Field[Any, Any, Any, Any]] = [serializer]
    while pending:
        field = pending.pop()
        field.validators = [
            ProhibitSurrogateCharacters()
            if type(validator) is ProhibitSurrogateCharactersValidator
            else validator
            for validator in field.validators
        ]
        if isinstance(field, serializers.Serializer):
            pending.extend(field.fields.values())
        child = getattr(field, "child", None)
        if child is not None:
            pending.append(child)
    return serializer


def validate(serializer: serializers.Serializer[Any], data: Any) -> tuple[Any, Any]:
    """The validated data and None, or None and the errors, that ``is_valid`` would give; but kept
    on nothing, so that one :func:`prepared` serializer validates for every thread at once:
    ``run_validation`` only reads the serializer, its fields and its context."""
    try:
        return serializer.run_validation(data), None
    except serializers.ValidationError as exc:
        return None, exc.detail


def single_header_value(value: str) -> None:
    # Servers join a header sent twice with commas: "tenant_1,tenant_2" is two values, not one id.
    if "," in value:
        raise serializers.ValidationError("Sent more than once, or contains a comma: send one value.")


class HeaderField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=ID_LENGTH, validators=[single_header_value], **kwargs)


class HeadersSerializer(serializers.Serializer[Any]):
    connector_id = HeaderField()
    owner_id = HeaderField()
    idempotency_key = HeaderField()


class WarningSerializer(serializers.Serializer[Any]):
    code = serializers.CharField(max_length=ID_LENGTH, trim_whitespace=False)
    message = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False)


class ResourceSerializer(serializers.Serializer[Any]):
    """The parts of ``data`` every Morph resource has."""

    object = serializers.ChoiceField(choices=["resource"])
    model = serializers.CharField(max_length=ID_LENGTH)
    id = IdField()


class EnvelopeSerializer(serializers.Serializer[Any]):
    event = serializers.CharField(max_length=ID_LENGTH)
    # DRF's metaclass moves declared fields off the class, so this does not hide Serializer.data.
    data = ResourceSerializer()  # type: ignore[assignment]

    def validate_event(self, value: str) -> str:
        match = EVENT_TYPE.match(value)
        if match is None:
            raise serializers.ValidationError('Expected "<model>::<action>", e.g. "crmOpportunity::created".')
        # context["mirrored"]: the Morph models the app mirrors, whose actions it knows.
        if match["model"] in self.context.get("mirrored", ()) and match["action"] not in ACTIONS:
            choices = ", ".join(f"{match['model']}::{action}" for action in ACTIONS)
            raise serializers.ValidationError(f"Expected one of {choices}.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        model = attrs["event"].partition("::")[0]
        if attrs["data"]["model"] != model:
            raise serializers.ValidationError(
                {"data": {"model": [f'Expected "{model}" for a {attrs["event"]} event.']}}
            )
        return attrs


class ResourceDataSerializer(serializers.Serializer[Any]):
    """``data`` of an event for a mirrored model, beyond what :class:`ResourceSerializer` checks.
    ``context["spec"]`` is the model's ResourceSpec, ``context["action"]`` the event's action."""

    createdAt = TimestampField()
    updatedAt = TimestampField()
    rawResource = serializers.JSONField(required=False, allow_null=True)
    warnings = WarningSerializer(many=True, required=False, allow_null=True)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # "fields" cannot be declared as an attribute: it is the name of Serializer.fields.
        fields = super().get_fields()
        spec, action = self.context["spec"], self.context["action"]
        required = action in ACTIONS_WITH_FIELDS
        message = f"Required for a {spec.morph_model}::{action} event; only a delete may leave it out."
        fields["fields"] = spec.fields(
            action=action,
            required=required,
            allow_null=not required,
            error_messages={"required": message, "null": message},
        )
        return fields
