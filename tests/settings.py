from __future__ import annotations

import os

import dj_database_url
import django

SECRET_KEY = "NOTASECRET"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"

# SQLite unless DATABASE_URL names another database (CI runs the suite on PostgreSQL too).
DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL", "sqlite://:memory:"))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("SQLITE_TEST_NAME", "")}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "django_tasks_db",
    "django_rq",
    "morph_webhooks",
    "tests.worker_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

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

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

MORPH_WEBHOOKS = {
    "SECRETS": ["test-secret-0123456789abcdef"],
    # Worker processes started by the tests run with these settings too (tests/workers.py).
    "PROCESSING": os.environ.get("MORPH_WEBHOOKS_PROCESSING", "sync"),
    "QUEUE": os.environ.get("MORPH_WEBHOOKS_QUEUE", "tasks"),
    "MAX_ATTEMPTS": int(os.environ.get("MORPH_WEBHOOKS_MAX_ATTEMPTS", "5")),
    "RETRY_DELAY": float(os.environ.get("MORPH_WEBHOOKS_RETRY_DELAY", "10")),
    "PENDING_TIMEOUT": float(os.environ.get("MORPH_WEBHOOKS_PENDING_TIMEOUT", "600")),
    # Workers that sync connections read the test's fake Morph API from the environment.
    **{
        setting: os.environ[f"MORPH_WEBHOOKS_{setting}"]
        for setting in ("API_URL", "API_KEY", "API_SECRET")
        if f"MORPH_WEBHOOKS_{setting}" in os.environ
    },
}

# Deferred-mode tests pick a backend; workers started by the tests read it from the environment.
IMMEDIATE = (
    "django.tasks.backends.immediate.ImmediateBackend"
    if django.VERSION >= (6,)
    else "django_tasks.backends.immediate.ImmediateBackend"
)
TASKS = {"default": {"BACKEND": os.environ.get("MORPH_WEBHOOKS_TASK_BACKEND", IMMEDIATE)}}
RQ_QUEUES = {"default": {"URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")}}

# Django 6.1 deprecates sending mail without MAILERS; the test environment swaps the backend for
# an in-memory one whatever it is. Earlier versions ignore the setting.
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"}}
