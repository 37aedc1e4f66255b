"""WSGI entry point of the benchmark: ``gunicorn benchmarks.wsgi`` (``benchmarks/run.py`` starts it)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

application = get_wsgi_application()
