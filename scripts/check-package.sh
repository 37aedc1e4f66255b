#!/usr/bin/env bash
# Builds the sdist and the wheel, checks their metadata, installs the wheel in a fresh virtual
# environment outside the source tree and runs a minimal project on it: migrations, templates
# and py.typed must be in the package, not only in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

rm -rf dist
"$PYTHON" -m build --sdist --wheel --outdir dist . >/dev/null
"$PYTHON" -m twine check --strict dist/*

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
wheel=$(ls dist/*.whl)
"$work/venv/bin/pip" install --quiet "$wheel[testing]"
"$work/venv/bin/python" - <<'PY'
import importlib.resources as resources

package = resources.files("morph_webhooks")
for name in (
    "py.typed",
    "migrations/0001_initial.py",
    "templates/morph_webhooks/admin/overview.html",
    "testing/factories.py",
):
    assert package.joinpath(name).is_file(), f"{name} is missing from the wheel"
PY

mkdir -p "$work/site"
cat > "$work/site/site_settings.py" <<'PY'
SECRET_KEY = "package-check"
USE_TZ = True
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "rest_framework", "morph_webhooks",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True, "OPTIONS": {"context_processors": [
    "django.template.context_processors.request", "django.contrib.auth.context_processors.auth",
    "django.contrib.messages.context_processors.messages"]}}]
ROOT_URLCONF = "site_urls"
MORPH_WEBHOOKS = {"SECRETS": ["package-check-secret-0123456789"]}
PY
cat > "$work/site/site_urls.py" <<'PY'
from django.urls import include, path

urlpatterns = [path("webhooks/morph/", include("morph_webhooks.urls"))]
PY
cd "$work/site"
export DJANGO_SETTINGS_MODULE=site_settings PYTHONPATH="$work/site"
"$work/venv/bin/python" -m django check --fail-level WARNING
"$work/venv/bin/python" -m django migrate --verbosity 0
"$work/venv/bin/python" -m django makemigrations --check --dry-run morph_webhooks
"$work/venv/bin/python" - <<'PY'
import django

django.setup()
from django.test import Client
from django.test.utils import setup_test_environment

from morph_webhooks.testing import opportunity_event, post_event
from morph_webhooks.testing.factories import OpportunityFactory

setup_test_environment()
response = post_event(Client(), opportunity_event())
assert response.json() == {"status": "processed"}, response.content
print("The installed wheel received an event:", response.json())
print("and its factories made:", OpportunityFactory())
PY
url=$("$work/venv/bin/python" -m django morph_webhooks_url https://example.com)
test "$url" = "https://example.com/webhooks/morph/?token=package-check-secret-0123456789"
echo "and printed Morph's URL: $url"
