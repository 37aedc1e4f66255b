"""Settings of the soak test: the example project as it would be deployed, on its own database.

``soak/run.py`` sets the environment below for every process it starts (migrate, gunicorn, the
final check), so that they all share one secret and one database:

- ``SOAK_DATABASE_URL``: default ``postgres://postgres@127.0.0.1:5432/morph_webhooks_soak``.
- ``SOAK_CONN_MAX_AGE``: seconds a worker keeps its database connection (default ``60``; ``0``
  opens one connection per request).
- ``DJANGO_SECRET_KEY`` and ``MORPH_WEBHOOKS_SECRET``: random per run.
"""

from __future__ import annotations

import copy
import os
import secrets
from typing import Any

import dj_database_url

# DEBUG off, as in production: the example's settings then refuse their public development
# secrets, which is also checked here. The random fallbacks only serve `manage.py shell
# --settings soak.settings` to inspect a run's database; run.py always passes explicit values, since
# gunicorn workers each import these settings and must agree on the webhook secret.
os.environ["DJANGO_DEBUG"] = "0"
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("MORPH_WEBHOOKS_SECRET", secrets.token_urlsafe(32))

from example_project.settings import *  # noqa: E402, F403
from example_project.settings import INSTALLED_APPS, LOGGING  # noqa: E402

SOAK_DATABASE_URL = os.environ.get(
    "SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/morph_webhooks_soak"
)

DATABASES = {
    "default": dj_database_url.parse(
        SOAK_DATABASE_URL,
        conn_max_age=int(os.environ.get("SOAK_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}

INSTALLED_APPS = [*INSTALLED_APPS, "soak.signal_log"]


def quiet(logging: dict[str, Any]) -> dict[str, Any]:
    """The example's logging without its INFO lines: it logs every request (and every stage
    change), 10,000+ lines that would hide what matters. Warnings and errors still reach
    gunicorn's log, which run.py scans."""
    logging = copy.deepcopy(logging)
    for name in ("morph_webhooks", "example_project"):
        logging["loggers"][name]["level"] = "WARNING"
    # Django reports 5xx answers on django.request, which has no console handler when DEBUG is off.
    logging["loggers"]["django.request"] = {"handlers": ["console"], "level": "ERROR", "propagate": False}
    return logging


LOGGING = quiet(LOGGING)
