"""What Morph is answered when something goes wrong: the one mapping of an exception to an HTTP
status, used by the endpoint's answer and by the delivery log."""

from __future__ import annotations

from typing import Any

from django.db import InterfaceError, OperationalError
from rest_framework import exceptions

from .events import InvalidEvent


class ConcurrentDeliveryError(Exception):
    """Concurrent deliveries kept colliding; a retry will succeed."""


# Refusals of the request itself (no length or too large: no body was kept; not JSON): a replay
# has nothing to read again.
REFUSED_REQUESTS = (411, 413, 415)


def http_status_for(exc: BaseException) -> int:
    """4xx for the sender's mistakes (sending the same again cannot help), 503 where a retry can
    succeed on its own (database down, lock timeout, colliding twins), 500 otherwise."""
    if isinstance(exc, InvalidEvent):
        return 400
    if isinstance(exc, exceptions.APIException):
        return exc.status_code
    if isinstance(exc, (OperationalError, InterfaceError, ConcurrentDeliveryError)):
        return 503
    return 500


def error_body(exc: InvalidEvent | exceptions.APIException) -> Any:
    """The JSON answered for a refused request: an invalid event's names each bad field."""
    if isinstance(exc, InvalidEvent):
        return exc.detail
    return {"error": exc.get_codes(), "detail": exc.detail}
