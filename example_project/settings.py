"""Settings of the example project: morph_webhooks wired into a minimal Django site.

Everything has a development default so ``python manage.py migrate && python manage.py runserver``
works with no setup. Environment variables override the defaults:

- ``DJANGO_DEBUG``: ``1``/``0`` (default ``1``).
- ``DJANGO_SECRET_KEY``: required when DEBUG is off.
- ``DJANGO_ALLOWED_HOSTS``: comma-separated (default: localhost only).
- ``DATABASE_URL``: e.g. ``postgres://user:password@localhost:5432/morph`` (default: SQLite in
  ``example_project/db.sqlite3``). PostgreSQL connections persist for 10 minutes, checked before
  each reuse.
- ``MORPH_WEBHOOKS_PROCESSING``: ``sync`` (default) or ``deferred`` (run ``python manage.py
  db_worker`` beside the server, with the same variable, to apply the queued events).
- ``MORPH_WEBHOOKS_QUEUE``: deferred mode's queue, ``tasks`` (default: a task per event, run by
  ``db_worker``) or ``deliveries`` (run ``python manage.py morph_webhooks_worker`` instead).
- ``MORPH_WEBHOOKS_SECRET``: the shared secret(s) Morph sends in ``?token=``, comma-separated so
  an old and a new secret can both be accepted while rotating. Required when DEBUG is off.
- ``MORPH_API_URL``, ``MORPH_API_KEY``, ``MORPH_API_SECRET``: Morph's REST API, for
  ``python manage.py morph_webhooks_sync`` (the URL defaults to Morph's).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_list(name: str) -> list[str] | None:
    """A comma-separated variable as a list (items stripped, empties dropped); None when unset."""
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = os.environ.get("DJANGO_DEBUG", "1").strip().lower() in {"1", "true", "yes", "on"}

# Both development defaults are published in this repository, so they protect nothing: they only
# exist to make the quickstart work, and are refused below once DEBUG is off.
DEV_SECRET_KEY = "django-insecure-example-project-development-only-do-not-deploy"
# Long enough (>= 24 characters) to pass morph_webhooks' system check for short secrets.
DEV_MORPH_WEBHOOKS_SECRET = "dev-only-morph-webhook-secret-change-me"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", DEV_SECRET_KEY)

# Unset means "use the development secret". Set but empty means "no secret", which the app's
# system check reports as an error rather than silently falling back to a public secret.
_morph_secrets = env_list("MORPH_WEBHOOKS_SECRET")
MORPH_WEBHOOKS = {
    "SECRETS": [DEV_MORPH_WEBHOOKS_SECRET] if _morph_secrets is None else _morph_secrets,
    # "sync" applies each event in the request; "deferred" queues it for `manage.py db_worker`.
    "PROCESSING": os.environ.get("MORPH_WEBHOOKS_PROCESSING", "sync"),
    # Deferred mode's queue: "tasks" (db_worker) or "deliveries" (manage.py morph_webhooks_worker).
    "QUEUE": os.environ.get("MORPH_WEBHOOKS_QUEUE", "tasks"),
    # Prometheus metrics at /webhooks/morph/metrics/ (prometheus-client, in the dev extra); under
    # several gunicorn workers, see gunicorn.conf.py.
    "METRICS": True,
    # Morph's REST API, read by morph_webhooks_sync: only those set (the app's defaults otherwise).
    **{
        setting: os.environ[variable]
        for setting, variable in (
            ("API_URL", "MORPH_API_URL"),
            ("API_KEY", "MORPH_API_KEY"),
            ("API_SECRET", "MORPH_API_SECRET"),
        )
        if variable in os.environ
    },
}

# The database task backend: its queue commits with the webhook, its worker is db_worker.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

if not DEBUG and (SECRET_KEY == DEV_SECRET_KEY or DEV_MORPH_WEBHOOKS_SECRET in MORPH_WEBHOOKS["SECRETS"]):
    raise ImproperlyConfigured(
        "DEBUG is off but a public development default is in use: set DJANGO_SECRET_KEY and "
        "MORPH_WEBHOOKS_SECRET (generate each with: "
        'python -c "import secrets; print(secrets.token_urlsafe(32))").'
    )

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS") or ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_tasks_db",
    "morph_webhooks",
    "example_project.stage_history",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'example_project' / 'db.sqlite3'}",
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections: without them every request starts a new PostgreSQL backend, which
    # makes the endpoint about three times slower. The health check (CONN_HEALTH_CHECKS above)
    # replaces a connection the server closed meanwhile (restart, idle timeout) before a request
    # uses it, instead of failing that request.
    DATABASES["default"]["CONN_MAX_AGE"] = 600
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # runserver handles requests in threads and Morph may deliver events concurrently, while
    # SQLite ignores select_for_update. A DEFERRED transaction (the default) that reads first and
    # writes later fails at once with "database is locked" when another writer got in between;
    # IMMEDIATE takes the write lock up front, so writers queue for up to `timeout` seconds
    # instead. (The app's own processing starts with a write and is safe either way; this covers
    # receivers, admin actions and management commands that read before they write.)
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = True

# runserver serves the admin's CSS and JS when DEBUG is on; a deployment would also set
# STATIC_ROOT and run collectstatic (or use WhiteNoise).
STATIC_URL = "static/"

# Morph puts the secret in the URL: Django's error reports (the DEBUG page, ADMINS' e-mails) and
# the log lines below mask it. The web server's own access log is configured outside Django.
DEFAULT_EXCEPTION_REPORTER = "morph_webhooks.redaction.ExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "morph_webhooks.redaction.SafeExceptionReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_token": {"()": "morph_webhooks.redaction.RedactToken"},
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
    },
    "formatters": {
        "console": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"},
        # Django's own request-log format, redefined here only to add the filter below.
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    # Every handler masks the secret: a record reaches the handlers of its logger's ancestors,
    # which a logger's own filters would not see.
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "console", "filters": ["redact_token"]},
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "django.server",
            "filters": ["redact_token"],
        },
        "mail_admins": {
            "class": "django.utils.log.AdminEmailHandler",
            "filters": ["require_debug_false", "redact_token"],
        },
    },
    "loggers": {
        # What the app and the example receivers do, visible next to runserver's request log.
        "morph_webhooks": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "example_project": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # Django's errors (django.request's tracebacks quote the URL), replacing its default
        # handlers, which mask nothing.
        "django": {"handlers": ["console", "mail_admins"], "level": "INFO", "propagate": False},
        # runserver's request log: Morph puts the secret in the URL, which must not be logged.
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
    },
}
