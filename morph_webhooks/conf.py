"""The app's settings, read from ``settings.MORPH_WEBHOOKS`` on every access.

Reading on access (rather than once at import) keeps ``override_settings`` working in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "SECRETS": [],
    "ALLOW_UNAUTHENTICATED": False,
    "MAX_BODY_SIZE": 1024 * 1024,
}


class Settings:
    def _get(self, name: str) -> Any:
        return getattr(settings, "MORPH_WEBHOOKS", {}).get(name, DEFAULTS[name])

    @property
    def SECRETS(self) -> Sequence[str]:
        secrets = self._get("SECRETS")
        # A lone string is a common slip; treating it as a list of characters would be a disaster.
        return [secrets] if isinstance(secrets, str) else list(secrets)

    @property
    def ALLOW_UNAUTHENTICATED(self) -> bool:
        return bool(self._get("ALLOW_UNAUTHENTICATED"))

    @property
    def MAX_BODY_SIZE(self) -> int:
        return int(self._get("MAX_BODY_SIZE"))


conf = Settings()
