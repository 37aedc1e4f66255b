"""The DRF field types of Morph's resources: ids, references, amounts, choices, timestamps (and
:func:`format_timestamp`, Morph's format written back), and :class:`ResourceFields`, the base of
each model's serializer of ``data.fields``."""

from __future__ import annotations

import datetime as dt
from decimal import Context, Decimal
from typing import Any

from rest_framework import serializers

from .base import ID_LENGTH

# What every database returns exactly from a decimal column (see AmountField).
SIGNIFICANT_DIGITS = 15


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

    # The fields Morph requires when it creates the resource (crmEngagement's ``type``): a
    # ``created`` event without one, or with null, is refused; other events may leave them out.
    required_when_created: tuple[str, ...] = ()

    def __init__(self, *args: Any, action: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set here, not on the declared fields: DRF rebuilds those from their arguments per instance.
        for name, field in self.fields.items():
            field.required = action == "created" and name in self.required_when_created
            if name in self.required_when_created:
                field.allow_null = False


class UpperCaseChoiceField(serializers.ChoiceField):
    """One of upper-case ``choices``, sent in any case (``won``, ``Won``, ``WON``)."""

    def to_internal_value(self, data: Any) -> Any:
        return super().to_internal_value(data.upper() if isinstance(data, str) else data)


class LowerCaseChoiceField(serializers.ChoiceField):
    """One of lower-case ``choices``, sent in any case (``call``, ``Call``, ``CALL``)."""

    def to_internal_value(self, data: Any) -> Any:
        return super().to_internal_value(data.lower() if isinstance(data, str) else data)


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


def format_timestamp(value: dt.datetime) -> str:
    """Morph's format: UTC with milliseconds and a Z, as JavaScript's toISOString() writes it."""
    return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
