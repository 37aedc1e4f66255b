"""Who may call the endpoint.

Morph signs nothing and only lets users configure a URL, so the usual credential is a shared
secret in the URL (``?token=...``, or ``https://morph:<secret>@host/...`` as HTTP Basic). Senders
that can set headers may use ``Authorization: Bearer ...``. A gateway in front of Morph may sign
requests the Standard Webhooks way instead. Optionally, only some networks may call at all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import time
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from .body import ascii_number, read_body
from .conf import InvalidSetting, conf
from .models import SignedMessage
from .redaction import TOKEN_PARAMETER

SIGNING_SECRET_PREFIX = "whsec_"


def presented_secret(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        # The user name carries nothing: the password is the secret.
        return decoded.partition(":")[2]
    return request.query_params.get(TOKEN_PARAMETER) or None


def matches_any(candidate: bytes, secrets: list[bytes]) -> bool:
    # Compare with every secret (no early exit), each in constant time.
    results = [hmac.compare_digest(candidate, secret) for secret in secrets]
    return any(results)


def signing_key(secret: str) -> bytes:
    """A Standard Webhooks secret is ``whsec_`` followed by the base64 of the key."""
    encoded = secret.removeprefix(SIGNING_SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


def configured_signing_key(index: int, secret: str) -> bytes:
    """The key of ``SIGNING_SECRETS[index]``; InvalidSetting naming it when the secret is not a
    Standard Webhooks one (an empty key would let anyone sign)."""
    try:
        key = signing_key(secret)
    except binascii.Error:
        key = b""
    if not key:
        raise InvalidSetting(f"MORPH_WEBHOOKS['SIGNING_SECRETS'][{index}] is not a Standard Webhooks secret.")
    return key


def _signing_keys() -> list[bytes]:
    # Decoded once per settings, not for every signed request.
    return [
        configured_signing_key(index, secret) for index, secret in enumerate(conf.SIGNING_SECRETS) if secret
    ]


def signature(secret: str, message_id: str, timestamp: str, body: bytes) -> bytes:
    """The Standard Webhooks v1 signature of a request (before base64)."""
    return _signature(signing_key(secret), message_id, timestamp, body)


def _signature(key: bytes, message_id: str, timestamp: str, body: bytes) -> bytes:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def signature_headers(secret: str, message_id: str, body: bytes) -> dict[str, str]:
    """The headers with which a gateway signs ``body`` the Standard Webhooks way, now."""
    timestamp = str(int(time.time()))
    encoded = base64.b64encode(signature(secret, message_id, timestamp, body)).decode()
    return {"webhook-id": message_id, "webhook-timestamp": timestamp, "webhook-signature": f"v1,{encoded}"}


def verify_signature(headers: Any, body: bytes, now: float | None = None) -> None:
    """Check Standard Webhooks headers against the raw body; raise AuthenticationFailed if wrong."""
    message_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (message_id and timestamp and signatures):
        raise exceptions.AuthenticationFailed("Missing webhook-id, webhook-timestamp or webhook-signature.")
    signed_at = ascii_number(timestamp)
    if signed_at is None:
        raise exceptions.AuthenticationFailed("webhook-timestamp is not a Unix timestamp.")
    now = time.time() if now is None else now
    # The window limits how long a captured request can be replayed.
    if abs(now - signed_at) > conf.SIGNATURE_TOLERANCE:
        raise exceptions.AuthenticationFailed("webhook-timestamp is outside the tolerance window.")
    expected = [_signature(key, message_id, timestamp, body) for key in conf.derived(_signing_keys)]
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue
        try:
            presented = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if matches_any(presented, expected):
            return
    raise exceptions.AuthenticationFailed("No valid signature.")


def consume_signed_message(headers: Any) -> None:
    """A verified signature is good once: see SignedMessage for why the id and timestamp."""
    if not SignedMessage.consume(headers["webhook-id"], headers["webhook-timestamp"]):
        raise exceptions.AuthenticationFailed(
            "This signed message was already received: a webhook-id and webhook-timestamp are accepted once."
        )


class MorphAuthentication(authentication.BaseAuthentication):
    """A shared secret (URL token, Bearer or Basic), or a Standard Webhooks signature."""

    def authenticate(self, request: Request) -> tuple[Any, Any]:
        secrets = conf.derived(_shared_secrets)
        if not secrets and not conf.SIGNING_SECRETS and conf.ALLOW_UNAUTHENTICATED:
            return AnonymousUser(), None
        candidate = presented_secret(request)
        if candidate is not None and secrets:
            if not matches_any(candidate.encode(), secrets):
                raise exceptions.AuthenticationFailed("Invalid secret.")
            return AnonymousUser(), None
        if conf.SIGNING_SECRETS and "webhook-signature" in request.headers:
            verify_signature(request.headers, read_body(request._request))
            consume_signed_message(request.headers)
            return AnonymousUser(), None
        raise exceptions.NotAuthenticated(
            "Missing credentials: pass ?token=<secret> or an Authorization header."
        )

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="morph-webhooks"'


def _shared_secrets() -> list[bytes]:
    return [secret.encode() for secret in conf.SECRETS if secret]


def client_address(request: HttpRequest) -> str | None:
    """The caller's address: REMOTE_ADDR, or the entry of X-Forwarded-For that the last of
    ``FORWARDED_PROXIES`` trusted proxies added. Entries further left are the caller's to forge."""
    proxies = conf.FORWARDED_PROXIES
    if proxies <= 0:
        return request.META.get("REMOTE_ADDR") or None
    forwarded = [
        part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()
    ]
    return forwarded[-proxies] if len(forwarded) >= proxies else None


class FromAllowedNetwork(permissions.BasePermission):
    message = "Requests from this address are not accepted."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not conf.ALLOWED_NETWORKS:
            return True
        try:
            address = ipaddress.ip_address(client_address(request._request) or "")
        except ValueError:
            return False
        return any(address in network for network in conf.derived(_allowed_networks))


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    # Parsed once per settings, not for every request.
    return [allowed_network(network) for network in conf.ALLOWED_NETWORKS]


def allowed_network(network: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An entry of ALLOWED_NETWORKS, parsed; InvalidSetting naming it when it is no network."""
    try:
        return ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise InvalidSetting(
            f"MORPH_WEBHOOKS['ALLOWED_NETWORKS'] has an invalid network: {network!r}."
        ) from None
