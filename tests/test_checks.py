from __future__ import annotations

import math

import pytest
from django.core.checks.registry import registry
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from morph_webhooks import checks
from morph_webhooks.checks import check_settings
from morph_webhooks.conf import DECLARED, conf
from tests.settings import IMMEDIATE

SECRET = "a-long-random-secret-0123456789"
DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def ids(settings_value, settings, debug=False):
    settings.MORPH_WEBHOOKS = settings_value
    settings.DEBUG = debug
    return [message.id for message in check_settings()]


def test_configured_secret_passes(settings):
    assert ids({"SECRETS": ["a-long-random-secret-0123456789"]}, settings) == []


@pytest.mark.parametrize("value", [{}, {"SECRETS": []}, {"SECRETS": [""]}, {"SECRETS": ""}])
def test_no_secret_is_an_error(settings, value):
    assert ids(value, settings) == ["morph_webhooks.E001"]


def test_missing_setting_is_an_error(settings):
    del settings.MORPH_WEBHOOKS
    assert [message.id for message in check_settings()] == ["morph_webhooks.E001"]


def test_explicit_opt_out_for_development(settings):
    assert ids({"ALLOW_UNAUTHENTICATED": True}, settings, debug=True) == []


def test_opt_out_left_on_in_production_warns(settings):
    assert ids({"ALLOW_UNAUTHENTICATED": True}, settings, debug=False) == ["morph_webhooks.W001"]


@pytest.mark.parametrize(
    "value", [{"SECRETS": 12345}, {"SECRETS": [None]}, {"SECRETS": [b"bytes-secret-0123456789abcdef"]}]
)
def test_secrets_of_the_wrong_type(settings, value):
    assert ids(value, settings) == ["morph_webhooks.E002"]


def test_weak_secret_warns(settings):
    assert ids({"SECRETS": ["short", "a-long-random-secret-0123456789"]}, settings) == ["morph_webhooks.W002"]


def test_check_is_registered_with_the_framework(settings):
    settings.MORPH_WEBHOOKS = {}
    with pytest.raises(SystemCheckError, match="morph_webhooks.E001"):
        call_command("check", tags=["security"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, []),
        ({"API_KEY": "key"}, ["morph_webhooks.E013"]),
        ({"API_SECRET": "secret"}, ["morph_webhooks.E013"]),
        ({"API_KEY": "key", "API_SECRET": "secret"}, []),
        ({"API_URL": "api.runmorph.dev"}, ["morph_webhooks.E014"]),
    ],
)
def test_api_settings(settings, value, expected):
    # A sync needs both halves of the credential; without either, it says so when it is run.
    assert ids({"SECRETS": [SECRET], **value}, settings) == expected


def test_the_api_secret_is_never_shown(settings):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "API_SECRET": ["the-api-secret-0123456"]}
    assert "the-api-secret" not in str(check_settings())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"PROCESSING": "deferred"}, []),
        ({"PROCESSING": "later"}, ["morph_webhooks.E005"]),
        ({"KEY_RETENTION_DAYS": 3}, ["morph_webhooks.W003"]),
    ],
)
def test_processing_settings(settings, value, expected):
    settings.TASKS = DATABASE_TASKS
    settings.MORPH_WEBHOOKS = {"SECRETS": ["a-long-random-secret-0123456789"], **value}
    assert [message.id for message in check_settings()] == expected


def test_deferred_without_a_tasks_framework(settings, monkeypatch):
    monkeypatch.setattr("morph_webhooks.checks.find_spec", lambda name: None)
    settings.MORPH_WEBHOOKS = {"SECRETS": ["a-long-random-secret-0123456789"], "PROCESSING": "deferred"}
    [message] = check_settings()
    assert message.id == "morph_webhooks.E006"
    # The backport alone runs nothing: the hint names a backend with a worker too.
    assert "django_tasks_db" in message.hint
    assert "'deliveries'" in message.hint

    # The app's own worker needs no tasks framework (tests/test_delivery_worker.py runs it so).
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "QUEUE": "deliveries"}
    assert check_settings() == []


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ALLOW_UNAUTHENTICATED", "false", "morph_webhooks.E007"),
        ("ALLOW_UNAUTHENTICATED", "0", "morph_webhooks.E007"),
        ("ALLOW_UNAUTHENTICATED", 1, "morph_webhooks.E007"),
        ("MAX_BODY_SIZE", "1MB", "morph_webhooks.E007"),
        ("MAX_BODY_SIZE", 1.5, "morph_webhooks.E007"),
        ("MAX_BODY_SIZE", True, "morph_webhooks.E007"),
        ("MAX_BODY_SIZE", -1, "morph_webhooks.E008"),
        ("MAX_BODY_SIZE", 0, "morph_webhooks.E008"),
        ("FORWARDED_PROXIES", "one", "morph_webhooks.E007"),
        ("FORWARDED_PROXIES", -1, "morph_webhooks.E008"),
        ("SIGNATURE_TOLERANCE", 0, "morph_webhooks.E008"),
        ("MAX_ATTEMPTS", 0, "morph_webhooks.E008"),
        ("MAX_ATTEMPTS", True, "morph_webhooks.E007"),
        ("RETRY_DELAY", -5, "morph_webhooks.E008"),
        ("RETRY_DELAY", "10", "morph_webhooks.E007"),
        ("RETRY_DELAY", math.nan, "morph_webhooks.E007"),
        ("MAX_RETRY_DELAY", math.inf, "morph_webhooks.E007"),
        ("PENDING_TIMEOUT", -1, "morph_webhooks.E008"),
        ("LOCK_TIMEOUT", -1, "morph_webhooks.E008"),
        ("DELIVERY_RETENTION_DAYS", -1, "morph_webhooks.E008"),
        ("KEY_RETENTION_DAYS", "thirty", "morph_webhooks.E007"),
        ("API_TIMEOUT", 0, "morph_webhooks.E008"),
        ("API_PAGE_SIZE", 0, "morph_webhooks.E008"),
        ("API_RETRIES", -1, "morph_webhooks.E008"),
        ("API_SECRET", 42, "morph_webhooks.E007"),
        ("KEY_RETENTION_DAYS", 30.5, "morph_webhooks.E007"),
        ("TASK_BACKEND", None, "morph_webhooks.E007"),
        ("PROCESSING", "later", "morph_webhooks.E005"),
        ("ALLOWED_NETWORKS", ["10.0.0.0/8", 8], "morph_webhooks.E002"),
    ],
)
def test_a_setting_of_the_wrong_type_or_range_is_an_error(settings, name, value, expected):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], name: value}

    messages = check_settings()

    assert [message.id for message in messages] == [expected]
    assert f"MORPH_WEBHOOKS['{name}'] must be " in messages[0].msg
    # What passes the check is what the app runs with; what fails it is refused when read too.
    with pytest.raises(ImproperlyConfigured, match=rf"MORPH_WEBHOOKS\['{name}'\] must be "):
        getattr(conf, name)


@pytest.mark.parametrize("name", list(DECLARED))
def test_every_setting_is_type_checked(settings, name):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], name: object()}
    assert [message.id for message in check_settings()] in (["morph_webhooks.E002"], ["morph_webhooks.E007"])


@pytest.mark.parametrize("name", list(DECLARED))
def test_every_default_is_valid(settings, name):
    settings.MORPH_WEBHOOKS = {}
    assert getattr(conf, name) == DECLARED[name].default


def test_numbers_accept_integers_and_floats(settings):
    settings.MORPH_WEBHOOKS = {
        "SECRETS": [SECRET],
        "RETRY_DELAY": 0.5,
        "MAX_RETRY_DELAY": 60,
        "LOCK_TIMEOUT": 2,
    }
    assert check_settings() == []
    assert (conf.RETRY_DELAY, conf.MAX_RETRY_DELAY, conf.LOCK_TIMEOUT) == (0.5, 60.0, 2.0)


def test_a_secret_of_the_wrong_type_is_not_shown(settings):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET, None]}
    [message] = check_settings()
    assert message.id == "morph_webhooks.E002"
    assert SECRET not in message.msg


@pytest.mark.parametrize(
    ("name", "hint"),
    [("ALLOWED_NETWORK", "Did you mean 'ALLOWED_NETWORKS'?"), ("SECRET", "Did you mean 'SECRETS'?")],
)
def test_an_unknown_setting_is_an_error_with_the_closest_name(settings, name, hint):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], name: ["10.0.0.0/8"]}
    [message] = check_settings()
    assert (message.id, message.hint) == ("morph_webhooks.E009", hint)


def test_an_unknown_setting_far_from_any_lists_them_all(settings):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "COLOUR": "blue"}
    [message] = check_settings()
    assert message.id == "morph_webhooks.E009"
    assert "ALLOW_UNAUTHENTICATED" in message.hint


@pytest.mark.parametrize("value", [["SECRETS"], SECRET, None])
def test_settings_that_are_not_a_dict(settings, value):
    settings.MORPH_WEBHOOKS = value
    assert [message.id for message in check_settings()] == ["morph_webhooks.E010"]
    with pytest.raises(ImproperlyConfigured, match="MORPH_WEBHOOKS must be a dict"):
        _ = conf.SECRETS


@pytest.mark.parametrize(
    ("tasks", "changes", "expected"),
    [
        (DATABASE_TASKS, {}, []),
        (DATABASE_TASKS, {"TASK_BACKEND": "db"}, ["morph_webhooks.E011"]),
        (DATABASE_TASKS, {"TASK_QUEUE": "webhooks"}, ["morph_webhooks.E012"]),
        (
            {"default": {**DATABASE_TASKS["default"], "QUEUES": ["default", "webhooks"]}},
            {"TASK_QUEUE": "webhooks"},
            [],
        ),
        ({"default": {**DATABASE_TASKS["default"], "QUEUES": []}}, {"TASK_QUEUE": "webhooks"}, []),
        # A backend that cannot be loaded is the tasks framework's own check to report.
        ({"default": {"BACKEND": "nowhere.Backend"}}, {}, []),
        ({"default": {"BACKEND": IMMEDIATE}}, {}, ["morph_webhooks.W004"]),
        (
            {**DATABASE_TASKS, "inline": {"BACKEND": IMMEDIATE}},
            {"TASK_BACKEND": "inline"},
            ["morph_webhooks.W004"],
        ),
        # The deliveries queue enqueues no task: whatever TASKS holds is not its concern.
        (DATABASE_TASKS, {"QUEUE": "deliveries", "TASK_BACKEND": "db"}, []),
        ({"default": {"BACKEND": IMMEDIATE}}, {"QUEUE": "deliveries"}, []),
        (DATABASE_TASKS, {"QUEUE": "table"}, ["morph_webhooks.E005"]),
    ],
)
def test_deferred_processing_checks_its_task_backend(settings, tasks, changes, expected):
    settings.TASKS = tasks
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "PROCESSING": "deferred", **changes}
    assert [message.id for message in check_settings()] == expected


def test_deferred_without_a_tasks_setting_warns_that_it_runs_in_the_request(settings):
    # Django's default TASKS is an ImmediateBackend: "queued" would be answered after processing.
    del settings.TASKS
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "PROCESSING": "deferred"}
    [message] = check_settings()
    assert message.id == "morph_webhooks.W004"
    assert "pip install '/path/to/morph-webhooks[tasks-db]'" in message.hint
    assert "django_tasks_db" in message.hint


def test_sync_processing_ignores_the_task_backend(settings):
    settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "TASK_BACKEND": "nowhere"}
    assert check_settings() == []


def test_sqlite_older_than_3_35_is_an_error(monkeypatch):
    import sqlite3

    sqlite = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    postgresql = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}}
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    [error] = checks.sqlite_version_errors(sqlite)
    assert error.id == "morph_webhooks.E016"
    assert "3.34.1" in error.msg
    # PostgreSQL alone: SQLite's version does not matter.
    assert checks.sqlite_version_errors(postgresql) == []

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 35, 0))
    assert checks.sqlite_version_errors(sqlite) == []
    # Registered: manage.py check runs it.
    assert checks.check_sqlite_version in registry.get_checks()


@pytest.mark.django_db
def test_a_postgresql_database_without_the_search_extension_is_warned_of():
    from django.db import connection

    from morph_webhooks.checks import check_search_extension

    assert check_search_extension(databases=["default"]) == []
    if connection.vendor != "postgresql":
        return  # SQLite searches without it
    with connection.cursor() as cursor:
        # Rolled back with the test's transaction, the trigram indexes with it.
        cursor.execute("DROP EXTENSION pg_trgm CASCADE")
    (warning,) = check_search_extension(databases=["default"])
    assert warning.id == "morph_webhooks.W005" and "'default' has no pg_trgm" in warning.msg
    assert "CREATE EXTENSION pg_trgm" in warning.hint
    # Run with the database checks, as `check --database default` and migrate do.
    assert "morph_webhooks.W005" in {message.id for message in registry.run_checks(databases=["default"])}
