"""Every Python snippet the documentation asks a user to copy is run: the settings by the system
checks (and the logging ones by Python's logging), the receivers by events through the endpoint.
The last test lists which test runs each snippet, so that a new one cannot go unrun."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from morph_webhooks.checks import check_settings
from morph_webhooks.models import WebhookDelivery
from morph_webhooks.signals import delivery_failed, event_received, opportunity_updated
from morph_webhooks.testing import opportunity_event, post_event, resource_event
from morph_webhooks.testing.factories import OpportunityFactory, WebhookDeliveryFactory
from tests.docs_pages import ROOT, blocks, page, pages
from tests.helpers import SECRET


def snippet(name: str, starting: str) -> str:
    [block] = [block for block in blocks(page(name)) if block.startswith(starting)]
    return block


class Recorder:
    """Stands for what a snippet leaves to the project (its models, a pager, a chat): records
    each call, and answers itself to any attribute."""

    def __init__(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]], name: str = "") -> None:
        self.calls, self.name = calls, name

    def __getattr__(self, attribute: str) -> Recorder:
        return Recorder(self.calls, f"{self.name}.{attribute}".lstrip("."))

    def __call__(self, *args: Any, **kwargs: Any) -> Recorder:
        self.calls.append((self.name, args, kwargs))
        return self


def run_settings(code: str) -> dict[str, Any]:
    """The snippet run after what a settings module already holds; `[...]` and `...` stand for
    the project's own values."""
    code = code.replace('"SECRETS": [...]', f'"SECRETS": ["{SECRET}"]').replace(
        "{...,", f'{{"SECRETS": ["{SECRET}"],'
    )
    namespace: dict[str, Any] = {"INSTALLED_APPS": ["django.contrib.admin", "morph_webhooks"]}
    exec(code, namespace)
    return namespace


@pytest.mark.parametrize(
    ("starting", "app"),
    [
        ('INSTALLED_APPS += ["django_tasks_db"]', "django_tasks_db"),
        ('INSTALLED_APPS += ["django_rq"]', "django_rq"),
        ('MORPH_WEBHOOKS = {"SECRETS": [...], "PROCESSING": "deferred", "QUEUE"', None),
    ],
)
def test_the_deferred_settings_pass_the_checks(starting: str, app: str | None) -> None:
    configured = run_settings(snippet("guides/deferred.md", starting))
    assert app is None or app in configured["INSTALLED_APPS"]
    settings = {name: configured[name] for name in ("TASKS", "RQ_QUEUES") if name in configured}
    with override_settings(MORPH_WEBHOOKS=configured["MORPH_WEBHOOKS"], **settings):
        assert check_settings() == []
    assert configured["MORPH_WEBHOOKS"]["PROCESSING"] == "deferred"


def test_the_mail_on_failure_settings_pass_the_checks() -> None:
    configured = run_settings(snippet("guides/operations.md", "ADMINS = "))
    with override_settings(ADMINS=configured["ADMINS"], MORPH_WEBHOOKS=configured["MORPH_WEBHOOKS"]):
        assert check_settings() == []
    assert configured["MORPH_WEBHOOKS"]["MAIL_ADMINS_ON_FAILURE"] is True


@pytest.mark.django_db
def test_the_registry_snippet_adds_the_apps_metrics() -> None:
    prometheus_client = pytest.importorskip(
        "prometheus_client", reason="needs prometheus-client (the dev extra)"
    )
    registry = prometheus_client.CollectorRegistry()
    code = snippet("guides/operations.md", "# yourapp/apps.py").replace(
        "prometheus_client.REGISTRY", "registry"
    )
    exec(code, {"registry": registry})
    assert {"morph_webhooks_deliveries", "morph_webhooks_queued"} <= {
        metric.name for metric in registry.collect()
    }


@pytest.fixture
def calls() -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    return []


@pytest.fixture
def receivers() -> Iterator[list[Any]]:
    """Receivers a snippet connected with @receiver, disconnected after the test."""
    connected: list[Any] = []
    yield connected
    for signal, function in connected:
        signal.disconnect(function)


def exec_receiver(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(code, namespace)
    return namespace


@pytest.mark.django_db
def test_the_opportunity_updated_receiver(
    client, django_capture_on_commit_callbacks, calls, receivers
) -> None:
    code = snippet("guides/signals.md", "from django.db import transaction")
    names = exec_receiver(
        code,
        {
            "Forecast": Recorder(calls, "Forecast"),
            "notify_sales_channel": Recorder(calls, "notify_sales_channel"),
        },
    )
    receivers.append((opportunity_updated, names["on_opportunity_updated"]))
    deal = OpportunityFactory()

    with django_capture_on_commit_callbacks(execute=True):
        response = post_event(
            client, opportunity_event("updated", deal.remote_id, fields={"name": "Renewed"})
        )

    assert response.json() == {"status": "processed"}
    assert calls == [
        ("Forecast.objects.filter", (), {"opportunity": deal}),
        ("Forecast.objects.filter.update", (), {"stale": True}),
        ("notify_sales_channel", (deal.pk,), {}),
    ]


@pytest.mark.django_db
def test_the_event_received_receiver_keeps_phone_calls(client, calls, receivers) -> None:
    code = snippet("guides/signals.md", "from django.dispatch import receiver")
    names = exec_receiver(code, {"PhoneCall": Recorder(calls, "PhoneCall")})
    receivers.append((event_received, names["keep_phone_calls"]))
    call = resource_event("telephonyCall", remote_id="call_9", fields={"duration": 60})

    response = post_event(client, call)

    assert response.json() == {"status": "ignored"}
    [(name, args, kwargs)] = calls
    assert (name, args) == ("PhoneCall.objects.update_or_create", ())
    assert kwargs == {
        "connector_id": "hubspot",
        "owner_id": "tenant_1",
        "remote_id": "call_9",
        "defaults": {"data": call["data"]},
    }


@pytest.mark.django_db
def test_the_delivery_failed_receiver_pages_someone(calls, receivers) -> None:
    code = snippet("guides/operations.md", "from django.dispatch import receiver")
    names = exec_receiver(code, {"pager": Recorder(calls, "pager")})
    receivers.append((delivery_failed, names["page_on_call"]))
    delivery = WebhookDeliveryFactory(status="dead")

    delivery_failed.send(sender=WebhookDelivery, delivery=delivery, exception=RuntimeError("CRM is down"))

    assert calls == [
        (
            "pager.trigger",
            (f"Dead Morph delivery {delivery.pk}: crmOpportunity::created from hubspot",),
            {},
        )
    ]


def run_python(code: str, tmp_path: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    """In another process: these snippets configure logging for the whole process."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), **environ)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


LEAKED = "/webhooks/morph/?token=a-secret-in-the-url-0123456789"


def test_the_logging_and_error_report_settings_mask_the_token(tmp_path: Path) -> None:
    settings = snippet("guides/security.md", "DEFAULT_EXCEPTION_REPORTER")
    (tmp_path / "snippet_settings.py").write_text("from tests.settings import *\n\n" + settings)
    code = f"""
import logging
import django
django.setup()
from django.conf import settings
from django.utils.module_loading import import_string
import_string(settings.DEFAULT_EXCEPTION_REPORTER)
import_string(settings.DEFAULT_EXCEPTION_REPORTER_FILTER)
logging.getLogger("django.server").info('"POST {LEAKED} HTTP/1.1" 200 21')
logging.getLogger("django.request").warning("Bad Request: {LEAKED}")
logging.getLogger("morph_webhooks.views").info("Morph webhook at {LEAKED}")
"""
    run = run_python(code, tmp_path, DJANGO_SETTINGS_MODULE="snippet_settings")

    assert run.returncode == 0, run.stderr
    assert "a-secret-in-the-url" not in run.stderr
    assert run.stderr.count("token=[redacted]") == 3, run.stderr


def test_the_gunicorn_logging_masks_the_token(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn", reason="needs gunicorn (the dev extra)")
    (tmp_path / "gunicorn_snippet.py").write_text(snippet("guides/security.md", "logconfig_dict = {"))
    code = f"""
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn_snippet import logconfig_dict

config = Config()
config.set("logconfig_dict", logconfig_dict)
logger = Logger(config)
logger.error("Error handling request {LEAKED}")
"""
    run = run_python(code, tmp_path)

    assert run.returncode == 0, run.stderr
    assert "a-secret-in-the-url" not in run.stdout + run.stderr
    assert "Error handling request /webhooks/morph/?token=[redacted]" in run.stderr


# Which test runs each snippet: page, how the snippet starts, the test module that runs it.
RUN_BY = [
    ("README.md", "# settings.py", "test_readme"),
    ("README.md", "# urls.py", "test_readme"),
    ("getting-started/setup.md", "# settings.py", "test_readme"),
    ("getting-started/setup.md", "# urls.py", "test_readme"),
    ("guides/deferred.md", 'INSTALLED_APPS += ["django_tasks_db"]', "test_docs_snippets"),
    ("guides/deferred.md", 'INSTALLED_APPS += ["django_rq"]', "test_docs_snippets"),
    ("guides/deferred.md", "MORPH_WEBHOOKS = ", "test_docs_snippets"),
    ("guides/operations.md", "# yourapp/apps.py", "test_docs_snippets"),
    ("guides/operations.md", "from django.dispatch import receiver", "test_docs_snippets"),
    ("guides/operations.md", "ADMINS = ", "test_docs_snippets"),
    ("guides/operations.md", "# settings.py", "test_alerting"),
    ("guides/security.md", "DEFAULT_EXCEPTION_REPORTER", "test_docs_snippets"),
    ("guides/security.md", "logconfig_dict = {", "test_docs_snippets"),
    ("guides/signals.md", "from django.db import transaction", "test_docs_snippets"),
    ("guides/signals.md", "def celebrate_won_deals", "test_user_example"),
    ("guides/querying.md", "from datetime import date", "test_querying"),
    ("guides/signals.md", "from django.dispatch import receiver", "test_docs_snippets"),
    ("guides/testing.md", "# yourapp/receivers.py", "test_user_example"),
    ("guides/testing.md", "# yourapp/tests/test_receivers.py", "test_user_example"),
]


def test_every_python_snippet_is_run_by_a_test() -> None:
    shown = [(name, block) for name in pages() for block in blocks(page(name))]
    unrun = [
        (name, block.splitlines()[0])
        for name, block in shown
        if not any(name == page_name and block.startswith(start) for page_name, start, _ in RUN_BY)
    ]
    assert unrun == []
    assert len(shown) == len(RUN_BY)
    # Each module named reads the page it is said to run.
    for name, _, module in RUN_BY:
        source = (ROOT / "tests" / f"{module}.py").read_text()
        assert f'"{name}"' in source or f"page({name!r})" in source or module == "test_readme", (name, module)
