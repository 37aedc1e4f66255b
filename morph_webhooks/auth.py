"""Shared-secret authentication for the endpoint.

Morph signs nothing and only lets users configure a URL, so the secret travels in the URL
(``?token=...``) or, from senders that can set headers, as ``Authorization: Bearer ...``.
"""

from __future__ import annotations

import hmac
from typing import Any

from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from .conf import conf

TOKEN_PARAMETER = "token"


def presented_secret(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.query_params.get(TOKEN_PARAMETER) or None


def is_valid_secret(candidate: str) -> bool:
    # Compare against every secret (no early exit) in constant time, so timing reveals nothing.
    matches = [hmac.compare_digest(candidate.encode(), secret.encode()) for secret in conf.SECRETS if secret]
    return any(matches)


class SharedSecretAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any]:
        if not conf.SECRETS and conf.ALLOW_UNAUTHENTICATED:
            return AnonymousUser(), None
        candidate = presented_secret(request)
        if candidate is None:
            raise exceptions.NotAuthenticated(
                "Missing secret: pass ?token=<secret> or Authorization: Bearer <secret>."
            )
        if not is_valid_secret(candidate):
            raise exceptions.AuthenticationFailed("Invalid secret.")
        return AnonymousUser(), None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="morph-webhooks"'
