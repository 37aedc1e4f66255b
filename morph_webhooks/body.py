"""Reading the request body once, within ``MAX_BODY_SIZE``."""

from __future__ import annotations

from typing import IO

from django.http import HttpRequest
from rest_framework import exceptions, status

from .conf import conf

_CACHE = "_morph_webhooks_body"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


def ascii_number(text: str, max_digits: int = 20) -> int | None:
    """``text`` as a whole number when it is one in at most ``max_digits`` ASCII digits: ``isdigit``
    also accepts "²", which ``int`` refuses, and ``int`` spends time on (or refuses) a huge one."""
    return int(text) if len(text) <= max_digits and text.isascii() and text.isdigit() else None


class LengthRequired(exceptions.APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_code = "length_required"


def read_body(request: HttpRequest) -> bytes:
    """The raw body, read at most once (signature checks and parsing both need it). A body over
    the limit is refused without being held in memory, whatever its declared length."""
    cached: bytes | None = getattr(request, _CACHE, None)
    if cached is not None:
        return cached
    limit = conf.MAX_BODY_SIZE
    content_length = request.META.get("CONTENT_LENGTH") or ""
    declared = ascii_number(content_length)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"Body over {limit} bytes.")
    body = _stream(request, content_length).read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"Body over {limit} bytes.")
    setattr(request, _CACHE, body)
    return body


def _stream(request: HttpRequest, declared: str) -> IO[bytes] | HttpRequest:
    """Where the body is: Django reads exactly Content-Length bytes, so a chunked body (sent
    without one) reads as empty unless the server de-chunks it and marks where it ends."""
    if declared or "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return request
    if request.META.get("wsgi.input_terminated"):
        # gunicorn (and other servers setting this WSGI extension) de-chunk the body and end the
        # stream after its last chunk; reading it stops at the limit like any other body.
        stream: IO[bytes] = request.META["wsgi.input"]
        return stream
    raise LengthRequired("A chunked body needs a server that de-chunks it; send a Content-Length header.")
