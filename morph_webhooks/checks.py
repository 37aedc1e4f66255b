from __future__ import annotations

import binascii
import ipaddress
from importlib.util import find_spec
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .auth import signing_key
from .conf import conf

# Morph may retry a delivery for days; a key forgotten sooner lets a late retry through.
MIN_KEY_DAYS = 7
# Shorter secrets are within reach of guessing over the network.
MIN_SECRET_LENGTH = 24
LIST_SETTINGS = ("SECRETS", "SIGNING_SECRETS", "ALLOWED_NETWORKS", "ALLOWED_CONNECTORS", "ALLOWED_OWNERS")


def tasks_framework_available() -> bool:
    return any(find_spec(name) is not None for name in ("django.tasks", "django_tasks"))


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
    if conf.PROCESSING not in ("sync", "deferred"):
        messages.append(
            Error(
                f"MORPH_WEBHOOKS['PROCESSING'] is {conf.PROCESSING!r}; expected 'sync' or 'deferred'.",
                id="morph_webhooks.E005",
            )
        )
    if conf.DEFERRED and not tasks_framework_available():
        messages.append(
            Error(
                "Deferred processing needs Django's Tasks framework.",
                hint="Use Django 6, or install the backport: pip install 'morph-webhooks[tasks]'.",
                id="morph_webhooks.E006",
            )
        )
    if conf.KEY_RETENTION_DAYS < MIN_KEY_DAYS:
        messages.append(
            Warning(
                f"KEY_RETENTION_DAYS is under {MIN_KEY_DAYS} days, less than Morph may keep retrying.",
                id="morph_webhooks.W003",
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
