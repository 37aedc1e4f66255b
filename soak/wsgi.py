"""WSGI entry point of the soak test: ``gunicorn soak.wsgi`` (``soak/run.py`` starts it)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "soak.settings")

application = get_wsgi_application()
