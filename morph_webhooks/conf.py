"""The app's settings, read from ``settings.MORPH_WEBHOOKS`` on every access.

Reading on access (rather than once at import) keeps ``override_settings`` working in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "SECRETS": [],
    "SIGNING_SECRETS": [],
    "SIGNATURE_TOLERANCE": 300,
    "ALLOW_UNAUTHENTICATED": False,
    "ALLOWED_NETWORKS": [],
    "FORWARDED_PROXIES": 0,
    "ALLOWED_CONNECTORS": [],
    "ALLOWED_OWNERS": [],
    "MAX_BODY_SIZE": 1024 * 1024,
    "PROCESSING": "sync",
    "TASK_BACKEND": "default",
    "TASK_QUEUE": "default",
    "MAX_ATTEMPTS": 5,
    "RETRY_DELAY": 10,
    "MAX_RETRY_DELAY": 3600,
    "PENDING_TIMEOUT": 600,
    "LOCK_TIMEOUT": 10,
    "KEY_RETENTION_DAYS": 30,
    "DELIVERY_RETENTION_DAYS": 30,
}


def _strings(value: Any) -> list[str]:
    # A lone string is a common slip; reading it as a list of characters would be a disaster.
    return [value] if isinstance(value, str) else list(value)


class Settings:
    def _get(self, name: str) -> Any:
        return getattr(settings, "MORPH_WEBHOOKS", {}).get(name, DEFAULTS[name])

    @property
    def SECRETS(self) -> list[str]:
        return _strings(self._get("SECRETS"))

    @property
    def SIGNING_SECRETS(self) -> list[str]:
        return _strings(self._get("SIGNING_SECRETS"))

    @property
    def SIGNATURE_TOLERANCE(self) -> int:
        return int(self._get("SIGNATURE_TOLERANCE"))

    @property
    def ALLOW_UNAUTHENTICATED(self) -> bool:
        return bool(self._get("ALLOW_UNAUTHENTICATED"))

    @property
    def ALLOWED_NETWORKS(self) -> list[str]:
        return _strings(self._get("ALLOWED_NETWORKS"))

    @property
    def FORWARDED_PROXIES(self) -> int:
        return int(self._get("FORWARDED_PROXIES"))

    @property
    def ALLOWED_CONNECTORS(self) -> list[str]:
        return _strings(self._get("ALLOWED_CONNECTORS"))

    @property
    def ALLOWED_OWNERS(self) -> list[str]:
        return _strings(self._get("ALLOWED_OWNERS"))

    @property
    def MAX_BODY_SIZE(self) -> int:
        return int(self._get("MAX_BODY_SIZE"))

    @property
    def PROCESSING(self) -> str:
        return str(self._get("PROCESSING"))

    @property
    def DEFERRED(self) -> bool:
        return self.PROCESSING == "deferred"

    @property
    def TASK_BACKEND(self) -> str:
        return str(self._get("TASK_BACKEND"))

    @property
    def TASK_QUEUE(self) -> str:
        return str(self._get("TASK_QUEUE"))

    @property
    def MAX_ATTEMPTS(self) -> int:
        return int(self._get("MAX_ATTEMPTS"))

    @property
    def RETRY_DELAY(self) -> float:
        return float(self._get("RETRY_DELAY"))

    @property
    def MAX_RETRY_DELAY(self) -> float:
        return float(self._get("MAX_RETRY_DELAY"))

    @property
    def PENDING_TIMEOUT(self) -> float:
        return float(self._get("PENDING_TIMEOUT"))

    @property
    def LOCK_TIMEOUT(self) -> float:
        return float(self._get("LOCK_TIMEOUT"))

    @property
    def KEY_RETENTION_DAYS(self) -> int:
        return int(self._get("KEY_RETENTION_DAYS"))

    @property
    def DELIVERY_RETENTION_DAYS(self) -> int:
        return int(self._get("DELIVERY_RETENTION_DAYS"))


conf = Settings()
