from __future__ import annotations

import difflib
from collections.abc import Mapping
from importlib.util import find_spec
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from .auth import allowed_network, configured_signing_key
from .conf import DECLARED, STRINGS, InvalidSetting, Setting, conf
from .extras import install

# Morph may retry a delivery for days; a key forgotten sooner lets a late retry through.
MIN_KEY_DAYS = 7
# Shorter secrets are within reach of guessing over the network.
MIN_SECRET_LENGTH = 24
# What deferred processing needs besides the tasks framework: a backend whose tasks a worker runs.
DEFERRED_HINT = (
    f"Run the tasks on a worker: {install('tasks-db')}, add 'django_tasks_db' to "
    "INSTALLED_APPS, set TASKS = {'default': {'BACKEND': 'django_tasks_db.DatabaseBackend'}} and run "
    "manage.py db_worker (or RQ: django-tasks-rq)."
)


def tasks_framework_available() -> bool:
    return any(find_spec(name) is not None for name in ("django.tasks", "django_tasks"))


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    configured = getattr(settings, "MORPH_WEBHOOKS", {})
    if not isinstance(configured, Mapping):
        return [
            Error(
                f"MORPH_WEBHOOKS must be a dict, not {type(configured).__name__}.",
                id="morph_webhooks.E010",
            )
        ]
    unknown = unknown_settings(configured)
    invalid = [
        invalid_setting(declaration, value)
        for declaration in DECLARED.values()
        if not declaration.is_valid(value := declaration.configured_value(configured))
    ]
    if invalid:
        # The checks below read the settings, which refuse invalid values.
        return unknown + invalid
    return unknown + check_values()


def unknown_settings(configured: Mapping[Any, Any]) -> list[CheckMessage]:
    # A misspelt setting would otherwise be ignored without a word, its default silently in force.
    return [
        Error(
            f"MORPH_WEBHOOKS has an unknown setting {name!r}.",
            hint=(
                f"Did you mean {close[0]!r}?"
                if (close := difflib.get_close_matches(str(name), DECLARED, n=1))
                else f"Known settings: {', '.join(DECLARED)}."
            ),
            id="morph_webhooks.E009",
        )
        for name in configured
        if name not in DECLARED
    ]


def invalid_setting(declaration: Setting[Any], value: Any) -> CheckMessage:
    if not declaration.kind.accepts(value):
        problem_id = "morph_webhooks.E002" if declaration.kind is STRINGS else "morph_webhooks.E007"
    else:
        problem_id = "morph_webhooks.E005" if declaration.choices else "morph_webhooks.E008"
    return Error(declaration.problem(value), id=problem_id)


def check_values() -> list[CheckMessage]:
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
            allowed_network(network)
        except InvalidSetting as exc:
            messages.append(Error(str(exc), id="morph_webhooks.E003"))
    for index, secret in enumerate(conf.SIGNING_SECRETS):
        try:
            if secret:
                configured_signing_key(index, secret)
        except InvalidSetting as exc:
            messages.append(
                Error(str(exc), hint='Expected "whsec_" followed by base64.', id="morph_webhooks.E004")
            )
    if not secrets and not signing_secrets and conf.ALLOW_UNAUTHENTICATED and not settings.DEBUG:
        messages.append(
            Warning(
                "The Morph webhook endpoint accepts unauthenticated requests while DEBUG is off.",
                hint="ALLOW_UNAUTHENTICATED is meant for local development; configure SECRETS.",
                id="morph_webhooks.W001",
            )
        )
    if conf.DEFERRED:
        messages += check_deferred()
    if conf.KEY_RETENTION_DAYS < MIN_KEY_DAYS:
        messages.append(
            Warning(
                f"KEY_RETENTION_DAYS is under {MIN_KEY_DAYS} days, less than Morph may keep retrying.",
                id="morph_webhooks.W003",
            )
        )
    if bool(conf.API_KEY) != bool(conf.API_SECRET):
        missing, given = ("API_SECRET", "API_KEY") if conf.API_KEY else ("API_KEY", "API_SECRET")
        messages.append(
            Error(
                f"MORPH_WEBHOOKS['{given}'] is set without MORPH_WEBHOOKS['{missing}'].",
                hint="Morph's REST API takes both (Morph's dashboard, API keys); morph_webhooks_sync needs them.",
                id="morph_webhooks.E013",
            )
        )
    if not conf.API_URL.startswith(("https://", "http://")):
        messages.append(
            Error(
                f"MORPH_WEBHOOKS['API_URL'] is not an http(s) URL: {conf.API_URL!r}.",
                hint="Morph's is https://api.runmorph.dev.",
                id="morph_webhooks.E014",
            )
        )
    if conf.METRICS and find_spec("prometheus_client") is None:
        messages.append(
            Error(
                "MORPH_WEBHOOKS['METRICS'] is on but prometheus-client is not installed.",
                hint=f"{install('metrics')}, or turn METRICS off.",
                id="morph_webhooks.E015",
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


def check_deferred() -> list[CheckMessage]:
    if conf.QUEUE == "deliveries":
        # morph_webhooks_worker applies the queued deliveries: no task carries them.
        return []
    if not tasks_framework_available():
        return [
            Error(
                "Deferred processing needs Django's Tasks framework.",
                hint=f"Use Django 6, or Django 5.2 with the django-tasks backport. {DEFERRED_HINT} "
                "Or let the app's own worker apply the queued deliveries: MORPH_WEBHOOKS['QUEUE'] = 'deliveries'.",
                id="morph_webhooks.E006",
            )
        ]
    backends, immediate = configured_task_backends()
    alias = conf.TASK_BACKEND
    if alias not in backends:
        return [
            Error(
                f"MORPH_WEBHOOKS['TASK_BACKEND'] is {alias!r}, which TASKS does not define.",
                hint=f"Use one of {', '.join(map(repr, backends))}, or add {alias!r} to TASKS.",
                id="morph_webhooks.E011",
            )
        ]
    params = backends[alias]
    messages: list[CheckMessage] = []
    queues = params.get("QUEUES", ["default"])
    # An empty QUEUES accepts any queue, as the tasks framework reads it.
    if queues and conf.TASK_QUEUE not in queues:
        messages.append(
            Error(
                f"MORPH_WEBHOOKS['TASK_QUEUE'] is {conf.TASK_QUEUE!r}, which TASKS[{alias!r}] does not list "
                "in its QUEUES.",
                id="morph_webhooks.E012",
            )
        )
    if runs_in_the_request(params, immediate):
        messages.append(
            Warning(
                f"Deferred processing runs on TASKS[{alias!r}], an ImmediateBackend: each event is "
                "processed inside the request, which is nonetheless answered 'queued'.",
                hint=DEFERRED_HINT,
                id="morph_webhooks.W004",
            )
        )
    return messages


def configured_task_backends() -> tuple[Mapping[str, Any], type]:
    """TASKS as the tasks framework reads it (its default when unset), and its ImmediateBackend."""
    try:
        from django.tasks import task_backends
        from django.tasks.backends.immediate import ImmediateBackend
    except ImportError:  # Django 5.2
        from django_tasks import task_backends  # type: ignore[assignment,no-redef,import-not-found,unused-ignore]
        from django_tasks.backends.immediate import (  # type: ignore[assignment,no-redef,import-not-found,unused-ignore]
            ImmediateBackend,
        )
    return task_backends.settings, ImmediateBackend


def runs_in_the_request(params: Mapping[str, Any], immediate: type) -> bool:
    try:
        backend = import_string(params["BACKEND"])
    except (KeyError, ImportError):
        return False  # the tasks framework's own checks name a backend that cannot be loaded
    return isinstance(backend, type) and issubclass(backend, immediate)


# The key's claim is one INSERT ... ON CONFLICT ... RETURNING (morph_webhooks.statements); SQLite
# runs RETURNING from 3.35 on, while Django 5.2 still accepts 3.31.
MIN_SQLITE = (3, 35)


def check_sqlite_version(**kwargs: Any) -> list[CheckMessage]:
    return sqlite_version_errors(settings.DATABASES)


def sqlite_version_errors(databases: Mapping[str, Mapping[str, Any]]) -> list[CheckMessage]:
    if not any(database["ENGINE"] == "django.db.backends.sqlite3" for database in databases.values()):
        return []
    import sqlite3

    if sqlite3.sqlite_version_info >= MIN_SQLITE:
        return []
    return [
        Error(
            f"morph_webhooks needs SQLite {'.'.join(map(str, MIN_SQLITE))} or later; "
            f"this Python's sqlite3 module has {sqlite3.sqlite_version}.",
            hint="Use a Python built with a newer SQLite (3.10+ from python.org or pyenv), or PostgreSQL.",
            id="morph_webhooks.E016",
        )
    ]


def check_search_extension(**kwargs: Any) -> list[CheckMessage]:
    """On each PostgreSQL database the check is run on (``check --database``, ``migrate``), that
    the ``pg_trgm`` extension migration 0014 created is still there: without it, and the trigram
    indexes that go with it, the admin's name, email and title searches read every row."""
    from django.db import connections, router

    messages: list[CheckMessage] = []
    for alias in kwargs.get("databases") or []:
        connection = connections[alias]
        if connection.vendor != "postgresql" or not router.allow_migrate(alias, "morph_webhooks"):
            continue
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
            if cursor.fetchone() is not None:
                continue
        messages.append(
            Warning(
                f"The PostgreSQL database {alias!r} has no pg_trgm extension: the admin's searches "
                "of names, emails and titles read every row.",
                hint=(
                    "As a user allowed to, run CREATE EXTENSION pg_trgm; then "
                    "manage.py migrate morph_webhooks 0013 and manage.py migrate to build the "
                    "trigram indexes again."
                ),
                id="morph_webhooks.W005",
            )
        )
    return messages
