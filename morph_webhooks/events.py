"""The events the app handles: what a webhook or a sync read from Morph becomes once validated
(:class:`MorphEvent`, :class:`ResourceEvent`), and what an invalid one raises (:class:`InvalidEvent`).

Types only, importing nothing of the package: every layer may use them. :mod:`.parsing` builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .resources.base import ResourceSpec


@dataclass(frozen=True, kw_only=True)
class MorphEvent:
    """One validated Morph webhook event, for any Morph model.

    ``payload`` is the JSON body as Morph sent it; ``ignored_keys`` names the keys of the envelope
    and of ``data`` that the app does not read. Events for the models the app mirrors are
    :class:`ResourceEvent`. ``source`` is "webhook", or "sync" for a resource read from Morph's
    REST API by a sync (which has no idempotency key).
    """

    model: str
    action: str
    connector_id: str
    owner_id: str
    idempotency_key: str
    remote_id: str
    payload: Mapping[str, Any]
    ignored_keys: tuple[str, ...] = ()
    source: str = "webhook"

    @property
    def type(self) -> str:
        """``"<model>::<action>"``, as Morph names the event."""
        return f"{self.model}::{self.action}"


@dataclass(frozen=True, kw_only=True)
class ResourceEvent(MorphEvent):
    """An event for a Morph model the app mirrors (``spec``): the version of the resource it
    describes (``remote_created_at``, ``remote_updated_at``) and ``changes``, the column values
    the payload sets (only those present in it). ``related`` are the events for the resources its
    fields carry expanded (an opportunity's stage sent with its own fields and timestamps), at any
    depth, each before the one carrying it, and without ``related`` of their own: they are stored
    with it, each under its own ``updatedAt``, as ``updated`` events of their model (``created``
    when new here). A copy of the resource itself nested in its fields is not one of them."""

    spec: ResourceSpec
    remote_created_at: datetime
    remote_updated_at: datetime
    changes: Mapping[str, Any]
    related: tuple[ResourceEvent, ...] = ()


class InvalidEvent(Exception):
    """The request can never be valid. ``errors`` maps each bad field (a dotted path or a header
    name) to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors

    @property
    def detail(self) -> dict[str, Any]:
        """The JSON body of the 400 answer."""
        return {"error": "invalid_event", "fields": self.errors}
