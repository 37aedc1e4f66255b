"""How the admin pages show what Morph sent: JSON, amounts, and rows that only processing writes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.http import HttpRequest
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..events import unique_keys

if TYPE_CHECKING:
    ModelAdmin = admin.ModelAdmin[Any]
else:
    # ModelAdmin is generic only in the type stubs.
    ModelAdmin = admin.ModelAdmin


def pre(text: str) -> SafeString:
    return format_html("<pre>{}</pre>", text)


def pretty_json(value: Any) -> SafeString:
    return pre(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def json_or_text(text: str) -> SafeString | None:
    """``text`` pretty-printed if it is JSON, as it is otherwise."""
    if not text:
        return None
    try:
        # A body with a repeated key is shown as sent: re-encoding it would silently drop one of
        # the values, hiding what got the request rejected; nesting too deep to parse stays text too.
        value = json.loads(text, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError):
        return pre(text)
    return pretty_json(value)


def amount_text(amount: Decimal, currency: str) -> str:
    """``amount`` with thousands separators and ``currency``, e.g. ``12,500.00 EUR``."""
    # The column keeps six decimals; show two unless the CRM sent more precision than that.
    exponent = amount.normalize().as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"{number_format(amount, decimal_pos=places, force_grouping=True)} {currency}".strip()


class ReadOnlyAdmin(ModelAdmin):
    """Rows are written by processing only; the admin shows them."""

    # Counting a large table on every page is slower than the page itself.
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Explicit rather than implied by the missing change permission, so that the display
        # methods named in the fieldsets stay valid even if a subclass grants it.
        return flatten_fieldsets(self.get_fieldsets(request, obj))
