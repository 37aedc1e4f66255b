"""Settings of the benchmark: the example project as it would be deployed, plus two yardsticks.

``benchmarks/run.py`` sets the environment below for itself and for gunicorn, so that every
process shares one secret and one database:

- ``DJANGO_SECRET_KEY`` and ``MORPH_WEBHOOKS_SECRET``: required (run.py draws them at random).
  They are not defaulted here: gunicorn's workers each import this module, and a random default
  would give each worker a different webhook secret.
- ``BENCH_DATABASE_URL``: default ``postgres://postgres@127.0.0.1:5432/mw_bench``.
- ``BENCH_CONN_MAX_AGE``: seconds a worker keeps its database connection (default ``600``).
- ``BENCH_STAGE_HISTORY``: ``1`` keeps the example's stage-history receivers (default ``0``).
- ``MORPH_WEBHOOKS_PROCESSING``: ``deferred`` for run.py's deferred-mode rounds (read by the
  example project's settings).

Logging is the example project's: the app writes its INFO line per request to stderr, which
gunicorn's log receives, as a deployment would keep it.
"""

from __future__ import annotations

import copy
import os

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

# DEBUG off as in production: with DEBUG on, Django keeps every query of a request in memory and
# the example refuses its public development secrets only when DEBUG is off.
os.environ["DJANGO_DEBUG"] = "0"
for _name in ("DJANGO_SECRET_KEY", "MORPH_WEBHOOKS_SECRET"):
    if not os.environ.get(_name):
        raise ImproperlyConfigured(f"benchmarks.settings needs {_name} in the environment (run.py sets it).")

from example_project.settings import *  # noqa: E402, F403
from example_project.settings import INSTALLED_APPS, LOGGING  # noqa: E402

ROOT_URLCONF = "benchmarks.urls"
WSGI_APPLICATION = "benchmarks.wsgi.application"
# testserver: the admin timings use Django's test client in-process against the same database.
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

BENCH_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mw_bench")
DATABASES = {
    "default": dj_database_url.parse(
        BENCH_DATABASE_URL,
        # Persistent connections, as the example project has them on PostgreSQL (and here on
        # SQLite too, for both endpoints alike): with 0 every request would also pay a
        # PostgreSQL backend start, and the comparison would mostly measure that.
        conn_max_age=int(os.environ.get("BENCH_CONN_MAX_AGE", "600")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # As the example project (writers queue instead of failing), plus WAL: with several gunicorn
    # workers writing, the rollback journal makes readers and writers block each other.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL",
    }

# The example's stage history is a user's receiver, not the app's own work: it adds two queries
# to every processed event, which the hand-written receiver does not do. Left out unless asked.
_stage_history = os.environ.get("BENCH_STAGE_HISTORY", "0") == "1"
INSTALLED_APPS = [
    *(app for app in INSTALLED_APPS if _stage_history or app != "example_project.stage_history"),
    "benchmarks.naive",
]

# The example's logging, INFO line per request included: it is part of what the app costs as
# deployed. It goes to gunicorn's log file (run.py keeps it), not to a terminal.
LOGGING = copy.deepcopy(LOGGING)
# Django reports 5xx answers on django.request, which has no console handler when DEBUG is off.
LOGGING["loggers"]["django.request"] = {"handlers": ["console"], "level": "ERROR", "propagate": False}
