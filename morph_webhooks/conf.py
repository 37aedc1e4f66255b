"""The app's settings, each declared once with its default, its type and its range.

Values are read from ``settings.MORPH_WEBHOOKS`` and checked when first read: a value of the wrong
type or out of range raises InvalidSetting (an ImproperlyConfigured) naming the setting, rather than being coerced
into something else (``bool("false")`` is True). The system checks report the same declarations
at startup. A checked value is kept until ``MORPH_WEBHOOKS`` changes (another dict, or Django's
``setting_changed`` signal: ``override_settings`` works in tests); every request reads several,
and checking each every time cost more than some of what they configure. The values handed out
are shared: read them, never change them.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

T = TypeVar("T")


@dataclass(frozen=True)
class Kind(Generic[T]):
    """What a setting's value must be, and how an accepted value is handed to the code."""

    description: str
    accepts: Callable[[object], bool]
    normalise: Callable[[Any], T]


def _is_strings(value: object) -> bool:
    return isinstance(value, str) or (
        isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)
    )


def _strings(value: str | list[str] | tuple[str, ...]) -> list[str]:
    # A lone string is a common slip; reading it as a list of characters would be a disaster.
    return [value] if isinstance(value, str) else list(value)


def _is_integer(value: object) -> bool:
    # bool is a subclass of int, but True is no count.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_integer(value) or (isinstance(value, float) and math.isfinite(value))


BOOLEAN = Kind[bool]("True or False", lambda value: isinstance(value, bool), bool)
INTEGER = Kind[int]("an integer", _is_integer, int)
NUMBER = Kind[float]("a number", _is_number, float)
STRING = Kind[str]("a string", lambda value: isinstance(value, str), str)
STRINGS = Kind[list[str]]("a list of strings", _is_strings, _strings)


def _is_seconds_by_connection(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(key, str) and key.count("/") == 1 and _is_number(seconds) and seconds >= 0
        for key, seconds in value.items()
    )


def _seconds_by_connection(value: Mapping[str, float]) -> dict[str, float]:
    return {key: float(seconds) for key, seconds in value.items()}


SECONDS_BY_CONNECTION = Kind[dict[str, float]](
    'a dict of "connector/owner" to a number of seconds of at least 0',
    _is_seconds_by_connection,
    _seconds_by_connection,
)


# What MORPH_WEBHOOKS holds when a project does not set it.
_UNSET = object()


class InvalidSetting(ImproperlyConfigured):
    """A value of MORPH_WEBHOOKS the app cannot use. Its message names the setting and never shows
    a secret: the endpoint answers it (see morph_webhooks.views.handle_exception)."""


def as_mapping(configured: object) -> Mapping[Any, Any]:
    if configured is _UNSET:
        return {}
    if not isinstance(configured, Mapping):
        raise InvalidSetting(f"MORPH_WEBHOOKS must be a dict, not {type(configured).__name__}.")
    return configured


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: read as ``conf.NAME`` (typed), checked by ``morph_webhooks.checks``."""

    default: T
    kind: Kind[T]
    minimum: float | None = None  # the smallest value allowed
    above: float | None = None  # every value allowed is greater than this
    choices: tuple[T, ...] = ()
    secret: bool = False  # never shown in a message
    name: str = field(default="", init=False)

    def __set_name__(self, owner: type, name: str) -> None:
        # The attribute's name is the setting's name; frozen only against later changes.
        object.__setattr__(self, "name", name)

    @overload
    def __get__(self, instance: None, owner: type) -> Setting[T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object, owner: type) -> Setting[T] | T:
        if instance is None:
            return self
        assert isinstance(instance, Settings)
        source, values = instance.checked()
        try:
            return values[self.name]  # type: ignore[no-any-return]
        except KeyError:
            pass
        # From the dict the values are kept for, not read again: it may have changed meanwhile.
        value = self.configured_value(as_mapping(source))
        if not self.is_valid(value):
            raise InvalidSetting(self.problem(value))
        values[self.name] = normalised = self.kind.normalise(value)
        return normalised

    def configured_value(self, configured: Mapping[Any, Any]) -> Any:
        return configured.get(self.name, self.default)

    def in_range(self, value: Any) -> bool:
        """Whether a value of the right kind is also one of the choices, and within bounds."""
        return (
            (not self.choices or value in self.choices)
            and (self.minimum is None or value >= self.minimum)
            and (self.above is None or value > self.above)
        )

    def is_valid(self, value: Any) -> bool:
        return self.kind.accepts(value) and self.in_range(value)

    def expected(self) -> str:
        if self.choices:
            return " or ".join(repr(choice) for choice in self.choices)
        bounds = [f"of at least {self.minimum:g}"] if self.minimum is not None else []
        bounds += [f"greater than {self.above:g}"] if self.above is not None else []
        return " ".join([self.kind.description, *bounds])

    def problem(self, value: Any) -> str:
        shown = "" if self.secret else f", not {reprlib.repr(value)}"
        return f"MORPH_WEBHOOKS['{self.name}'] must be {self.expected()}{shown}."


class Settings:
    def __init__(self) -> None:
        # The MORPH_WEBHOOKS these values were read from, and the values: replaced together, in
        # one assignment, so that a thread never reads one setting's values with another's.
        self._checked: tuple[object, dict[Any, Any]] = (_UNSET, {})

    def checked(self) -> tuple[object, dict[Any, Any]]:
        """The current MORPH_WEBHOOKS, with the values checked so far (by name) and what was
        derived from them (by function); empty again once it changed."""
        source = getattr(settings, "MORPH_WEBHOOKS", _UNSET)
        checked = self._checked
        if checked[0] is not source:
            checked = self._checked = (source, {})
        return checked

    def forget(self) -> None:
        self._checked = (_UNSET, {})

    def derived(self, compute: Callable[[], T]) -> T:
        """What ``compute`` makes of the settings (parsed networks, the spellings of a secret):
        computed once per change of MORPH_WEBHOOKS, like the values it reads."""
        source, values = self.checked()
        try:
            return values[compute]  # type: ignore[no-any-return]
        except KeyError:
            pass
        result = compute()
        if self.checked()[0] is source:  # else computed from the next settings: not kept for these
            values[compute] = result
        return result

    # One line per setting; docs/reference/settings.md documents each (its build fails without).
    SECRETS = Setting([], STRINGS, secret=True)
    SIGNING_SECRETS = Setting([], STRINGS, secret=True)
    SIGNATURE_TOLERANCE = Setting(300, INTEGER, minimum=1)
    ALLOW_UNAUTHENTICATED = Setting(False, BOOLEAN)
    ALLOWED_NETWORKS = Setting([], STRINGS)
    FORWARDED_PROXIES = Setting(0, INTEGER, minimum=0)
    ALLOWED_CONNECTORS = Setting([], STRINGS)
    ALLOWED_OWNERS = Setting([], STRINGS)
    MAX_BODY_SIZE = Setting(1024 * 1024, INTEGER, minimum=1)
    PROCESSING = Setting("sync", STRING, choices=("sync", "deferred"))
    TASK_BACKEND = Setting("default", STRING)
    TASK_QUEUE = Setting("default", STRING)
    # Deferred mode: "tasks", a task per delivery on TASK_BACKEND; "deliveries", the queued
    # deliveries themselves, applied by morph_webhooks_worker (morph_webhooks.worker).
    QUEUE = Setting("tasks", STRING, choices=("tasks", "deliveries"))
    MAX_ATTEMPTS = Setting(5, INTEGER, minimum=1)
    RETRY_DELAY = Setting(10.0, NUMBER, minimum=0)
    MAX_RETRY_DELAY = Setting(3600.0, NUMBER, minimum=0)
    PENDING_TIMEOUT = Setting(600.0, NUMBER, minimum=0)
    LOCK_TIMEOUT = Setting(10.0, NUMBER, minimum=0)  # 0: no limit
    KEY_RETENTION_DAYS = Setting(30, INTEGER, minimum=0)
    DELIVERY_RETENTION_DAYS = Setting(30, INTEGER, minimum=0)
    # Morph's REST API, read by morph_webhooks_sync.
    API_URL = Setting("https://api.runmorph.dev", STRING)
    API_KEY = Setting("", STRING)
    API_SECRET = Setting("", STRING, secret=True)
    API_TIMEOUT = Setting(30.0, NUMBER, above=0)
    API_PAGE_SIZE = Setting(100, INTEGER, minimum=1)
    API_RETRIES = Setting(5, INTEGER, minimum=0)
    SYNC_LEASE_SECONDS = Setting(900.0, NUMBER, above=0)
    # The health check's thresholds (morph_webhooks.health).
    HEALTH_DEAD_CRITICAL = Setting(10, INTEGER, minimum=1)
    HEALTH_OVERDUE_SECONDS = Setting(300.0, NUMBER, minimum=0)
    HEALTH_FAILURE_RATE = Setting(0.1, NUMBER, minimum=0)
    SILENCE_THRESHOLD = Setting(86400.0, NUMBER, minimum=0)  # 0: no silence check
    SILENCE_OVERRIDES = Setting({}, SECONDS_BY_CONNECTION)
    SYNC_MAX_AGE = Setting(0.0, NUMBER, minimum=0)  # 0: no age check
    # Prometheus metrics (morph_webhooks.metrics), with the metrics extra.
    METRICS = Setting(False, BOOLEAN)
    MAIL_ADMINS_ON_FAILURE = Setting(False, BOOLEAN)  # morph_webhooks.alerts

    @property
    def DEFERRED(self) -> bool:
        return self.PROCESSING == "deferred"


DECLARED: dict[str, Setting[Any]] = {
    name: value for name, value in vars(Settings).items() if isinstance(value, Setting)
}

conf = Settings()


def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    # A MORPH_WEBHOOKS changed in place and set again (override_settings) is the same dict.
    if setting == "MORPH_WEBHOOKS":
        conf.forget()


setting_changed.connect(_forget_settings, dispatch_uid="morph_webhooks_forget_settings")
