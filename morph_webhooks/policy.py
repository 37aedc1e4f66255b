"""Which events the app accepts once the caller is authenticated: the same rule for a request and
for a replay of a logged one."""

from __future__ import annotations

from rest_framework import exceptions

from .conf import conf
from .events import MorphEvent


def check_allowed(event: MorphEvent) -> None:
    if conf.ALLOWED_CONNECTORS and event.connector_id not in conf.ALLOWED_CONNECTORS:
        raise exceptions.PermissionDenied(f"Connector {event.connector_id!r} is not accepted here.")
    if conf.ALLOWED_OWNERS and event.owner_id not in conf.ALLOWED_OWNERS:
        raise exceptions.PermissionDenied(f"Owner {event.owner_id!r} is not accepted here.")
