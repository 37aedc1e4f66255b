from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import conf

# Shorter secrets are within reach of guessing over the network.
MIN_SECRET_LENGTH = 24


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    raw = getattr(settings, "MORPH_WEBHOOKS", {}).get("SECRETS", [])
    if not isinstance(raw, (str, list, tuple)) or not all(isinstance(secret, str) for secret in conf.SECRETS):
        return [
            Error(
                "MORPH_WEBHOOKS['SECRETS'] must be a list of strings.",
                id="morph_webhooks.E002",
            )
        ]
    secrets = [secret for secret in conf.SECRETS if secret]
    messages: list[CheckMessage] = []
    if not secrets and not conf.ALLOW_UNAUTHENTICATED:
        messages.append(
            Error(
                "No secret is configured for the Morph webhook endpoint.",
                hint=(
                    "Set MORPH_WEBHOOKS['SECRETS'] to a list of long random strings, or, for local "
                    "development only, MORPH_WEBHOOKS['ALLOW_UNAUTHENTICATED'] = True."
                ),
                id="morph_webhooks.E001",
            )
        )
    if not secrets and conf.ALLOW_UNAUTHENTICATED and not settings.DEBUG:
        messages.append(
            Warning(
                "The Morph webhook endpoint accepts unauthenticated requests while DEBUG is off.",
                hint="ALLOW_UNAUTHENTICATED is meant for local development; configure SECRETS.",
                id="morph_webhooks.W001",
            )
        )
    if any(len(secret) < MIN_SECRET_LENGTH for secret in secrets):
        messages.append(
            Warning(
                f"A Morph webhook secret is shorter than {MIN_SECRET_LENGTH} characters.",
                hint='Generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"',
                id="morph_webhooks.W002",
            )
        )
    return messages
