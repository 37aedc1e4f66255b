from __future__ import annotations

import binascii
import ipaddress
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .auth import signing_key
from .conf import conf

# Shorter secrets are within reach of guessing over the network.
MIN_SECRET_LENGTH = 24
LIST_SETTINGS = ("SECRETS", "SIGNING_SECRETS", "ALLOWED_NETWORKS", "ALLOWED_CONNECTORS", "ALLOWED_OWNERS")


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    configured = getattr(settings, "MORPH_WEBHOOKS", {})
    wrong = [
        name
        for name in LIST_SETTINGS
        if not isinstance(value := configured.get(name, []), (str, list, tuple))
        or not all(isinstance(item, str) for item in ([value] if isinstance(value, str) else value))
    ]
    if wrong:
        return [
            Error(f"MORPH_WEBHOOKS['{name}'] must be a list of strings.", id="morph_webhooks.E002")
            for name in wrong
        ]

    secrets = [secret for secret in conf.SECRETS if secret]
    signing_secrets = [secret for secret in conf.SIGNING_SECRETS if secret]
    messages: list[CheckMessage] = []
    if not secrets and not signing_secrets and not conf.ALLOW_UNAUTHENTICATED:
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
    for network in conf.ALLOWED_NETWORKS:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            messages.append(
                Error(
                    f"MORPH_WEBHOOKS['ALLOWED_NETWORKS'] has an invalid network: {network!r}.",
                    id="morph_webhooks.E003",
                )
            )
    for index, secret in enumerate(signing_secrets):
        try:
            valid = bool(signing_key(secret))
        except binascii.Error:
            valid = False
        if not valid:
            messages.append(
                Error(
                    f"MORPH_WEBHOOKS['SIGNING_SECRETS'][{index}] is not a Standard Webhooks secret.",
                    hint='Expected "whsec_" followed by base64.',
                    id="morph_webhooks.E004",
                )
            )
    if not secrets and not signing_secrets and conf.ALLOW_UNAUTHENTICATED and not settings.DEBUG:
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
