"""DRF serializers for what Morph sends: headers, the event envelope and an opportunity.

Morph's documentation and its real payloads disagree (see README, "What Morph sends"); these
accept both shapes and nothing else.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Context, Decimal
from typing import Any, TypeVar

from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from .resources.base import ACTIONS, ID_LENGTH
from .text import encodable

# Morph documents ``fields`` as required. A delete needs none, but a create or an update without
# them (a typo such as "fileds") would store or change nothing while answering "processed".
ACTIONS_WITH_FIELDS = ("created", "updated")
# What every database returns exactly from a decimal column (see AmountField).
SIGNIFICANT_DIGITS = 15
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


class IdField(serializers.CharField):
    """A Morph id: a non-empty string; numeric ids from CRMs such as Pipedrive become strings."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=ID_LENGTH, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, float):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class ReferenceField(IdField):
    """A reference to another Morph resource, reduced to its id.

    Morph documents a bare id string but sends ``{"object": "resourceRef", "model", "id"}``, or the
    expanded resource (``"object": "resource"`` with its ``fields``). All three are accepted.
    """

    default_error_messages = {
        "invalid_object": 'Expected "object" to be "resourceRef" or "resource".',
        "missing_id": 'A reference object needs an "id".',
    }

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, dict):
            if data.get("object", "resourceRef") not in ("resourceRef", "resource"):
                self.fail("invalid_object")
            if "id" not in data:
                self.fail("missing_id")
            data = data["id"]
        return super().to_internal_value(data)


class ResourceFields(serializers.Serializer[Any]):
    """``data.fields`` of a Morph model. Every field is optional (an event carries those that
    changed); each field's ``source`` is the column it is stored in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set here, not on the declared fields: DRF rebuilds those from their arguments per instance.
        for field in self.fields.values():
            field.required = False


class UpperCaseChoiceField(serializers.ChoiceField):
    """One of upper-case ``choices``, sent in any case (``won``, ``Won``, ``WON``)."""

    def to_internal_value(self, data: Any) -> Any:
        return super().to_internal_value(data.upper() if isinstance(data, str) else data)


class AmountField(serializers.DecimalField):
    """Morph documents the amount as a string and sends a number: either is accepted."""

    # The model's column: numeric(24, 6).
    MAX_DIGITS, DECIMAL_PLACES = 24, 6

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            max_digits=self.MAX_DIGITS, decimal_places=self.DECIMAL_PLACES, min_value=Decimal(0), **kwargs
        )

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, (int, float, str)):
            self.fail("invalid")
        if isinstance(data, float):
            # repr() is the shortest text that reads back as the same float: 19.99, not 19.98999...
            data = repr(data)
        return super().to_internal_value(data)

    def validate_precision(self, value: Decimal) -> Decimal:
        # SQLite stores a decimal as a double, exact to 15 significant digits only; more would be
        # read back as another number, or not at all. More whole digits than that are no money
        # amount and are refused; decimals are rounded to what is left (at most decimal_places):
        # CRMs keep more decimals than money needs, and rounding them beats refusing the event.
        whole_digits = max(value.adjusted() + 1, 0) if value else 0
        if whole_digits > SIGNIFICANT_DIGITS:
            self.fail("max_whole_digits", max_whole_digits=SIGNIFICANT_DIGITS)
        places = min(self.DECIMAL_PLACES, SIGNIFICANT_DIGITS - whole_digits)
        rounded = value.quantize(Decimal(1).scaleb(-places), context=Context(prec=self.MAX_DIGITS))
        if rounded.adjusted() >= SIGNIFICANT_DIGITS:  # 999999999999999.5 rounds up to 16 digits
            self.fail("max_whole_digits", max_whole_digits=SIGNIFICANT_DIGITS)
        return rounded


class TimestampField(serializers.DateTimeField):
    def __init__(self, **kwargs: Any) -> None:
        # Morph sends UTC ("...Z"); a timestamp without an offset is read as UTC too.
        super().__init__(default_timezone=dt.timezone.utc, **kwargs)


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
            required=required,
            allow_null=not required,
            error_messages={"required": message, "null": message},
        )
        return fields
