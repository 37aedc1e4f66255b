"""How the admin pages show what Morph sent: JSON, amounts, and rows that only processing writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.http import HttpRequest
from django.templatetags.static import static
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..parsing import unique_keys
from .counting import EstimatingPaginator

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

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


# Every page shows an empty value so, lists and change pages alike.
EMPTY = "—"


def moment(value: datetime | None) -> str:
    """A time to the second, in the current time zone: deliveries a second apart stay apart."""
    return "" if value is None else date_format(timezone.localtime(value), "Y-m-d H:i:s")


# The characters of an idempotency key a list shows; Morph's are 32 or more.
KEY_SHOWN = 16


def short_key(key: str) -> SafeString | str:
    """An idempotency key's start, whole in its tooltip: a list shows many columns beside it. The
    change page shows it whole, and searching takes it whole too."""
    if len(key) <= KEY_SHOWN:
        return key or EMPTY
    return format_html('<span title="{}">{}…</span>', key, key[: KEY_SHOWN - 1])


def event_text(event: str) -> SafeString | str:
    # The model and the action may go on two lines: a list must fit a laptop's width.
    model, separator, action = event.partition("::")
    return format_html("{}{}<wbr>{}", model, separator, action) if event else EMPTY


def connection_text(connector_id: str, owner_id: str) -> str:
    # Connector and owner together: they only mean something as a pair.
    return f"{connector_id or EMPTY} / {owner_id or EMPTY}"


def field_as(name: str, label: StrOrPromise) -> Callable[[Any, Any], Any]:
    """A display method showing the model field ``name`` under ``label``: the admin reads a model
    field's label from its verbose_name, which cannot change without a migration."""

    @admin.display(description=label, ordering=name)
    def show(self: Any, obj: Any) -> Any:
        value = getattr(obj, name)
        if isinstance(value, datetime):
            return moment(value)
        return value if value not in (None, "") else EMPTY

    return show


def deleted_mark(deleted_at: datetime | None, *, when: bool = False) -> SafeString | str:
    """A deleted row says so, with the admin's red cross, and ``when`` (or in its tooltip); a row
    that is not shows the empty value: a green check would read as "fine"."""
    if deleted_at is None:
        return EMPTY
    return format_html(
        '<span class="morph-deleted" title="{}"><img src="{}" alt=""> {}{}</span>',
        moment(deleted_at),
        static("admin/img/icon-no.svg"),
        _("Deleted"),
        f" {moment(deleted_at)}" if when else "",
    )


class ReadOnlyAdmin(ModelAdmin):
    """Rows are written by processing only; the admin shows them."""

    # Counting a large table on every page is slower than the page itself: the list's own count
    # is PostgreSQL's estimate when it is big, and the unfiltered total is not counted.
    show_full_result_count = False
    paginator = EstimatingPaginator
    empty_value_display = EMPTY
    change_list_template = "morph_webhooks/admin/change_list.html"

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
