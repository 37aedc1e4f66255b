"""The operations guide: its JSON logging example, run as a project would paste it, and
its Prometheus rules, one for each metric the app serves."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from morph_webhooks.conf import DECLARED
from tests.docs_pages import ROOT, blocks, page, section

OPERATIONS = page("guides/operations.md")
ALERTING = section(OPERATIONS, "## Alerting")
METRICS = [
    "morph_webhooks_deliveries_total",
    "morph_webhooks_processing_seconds",
    "morph_webhooks_queued",
    "morph_webhooks_oldest_queued_seconds",
    "morph_webhooks_dead",
    "morph_webhooks_last_event_timestamp_seconds",
    "morph_webhooks_silence_threshold_seconds",
    "morph_webhooks_last_sync_timestamp_seconds",
]

# Three requests through the real endpoint, with the guide's LOGGING as the project's settings.
REQUESTS = """
import django
django.setup()
from django.core.management import call_command
from django.test import Client
from morph_webhooks.testing import morph_headers, opportunity_event, post_event

call_command("migrate", verbosity=0)
client = Client()
post_event(client, opportunity_event(), headers=morph_headers("readme-1"))
post_event(client, opportunity_event(fields={"amount": "lots"}), headers=morph_headers("readme-2"))
post_event(client, opportunity_event(), headers=morph_headers("readme-3"), secret="not-the-secret-0123456789")
"""


def python_block(starting: str) -> str:
    [block] = [b for b in blocks(OPERATIONS) if starting in b]
    return block


def test_the_json_logging_example_writes_the_request_log_as_fields(tmp_path: Path) -> None:
    pytest.importorskip("pythonjsonlogger", reason="needs python-json-logger (the dev extra)")
    (tmp_path / "readme_settings.py").write_text(
        "from tests.settings import *\n\n" + python_block("pythonjsonlogger")
    )
    environ = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    environ.update(
        DJANGO_SETTINGS_MODULE="readme_settings",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        DATABASE_URL="sqlite://:memory:",  # its own database, whatever the suite runs on
    )

    run = subprocess.run(
        [sys.executable, "-c", REQUESTS],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    logged = [line for line in lines if line["name"] == "morph_webhooks.views"]
    assert [
        {
            name: line[name]
            for name in ("levelname", "outcome", "model", "connector", "owner", "key", "status")
        }
        for line in logged
    ] == [
        {
            "levelname": "INFO",
            "outcome": "processed",
            "model": "crmOpportunity",
            "connector": "hubspot",
            "owner": "tenant_1",
            "key": "readme-1",
            "status": 200,
        },
        {
            "levelname": "WARNING",
            "outcome": "invalid_event",
            "model": "crmOpportunity",
            "connector": "hubspot",
            "owner": "tenant_1",
            "key": "readme-2",
            "status": 400,
        },
        {
            "levelname": "WARNING",
            "outcome": "authentication_failed",
            "model": "",
            "connector": "hubspot",
            "owner": "tenant_1",
            "key": "readme-3",
            "status": 401,
        },
    ]
    assert all(isinstance(line["ms"], float) for line in logged)
    assert logged[0]["message"].startswith("Morph webhook 200 processed key='readme-1' connector='hubspot'")


def test_a_rule_for_each_metric() -> None:
    [rules] = re.findall(r"```yaml\n(.*?)```", ALERTING, flags=re.DOTALL)
    # Each alert's expression, with its continuation lines.
    expressions = re.findall(
        r"expr: (.*?)(?=\n\s+(?:for|labels|annotations):|\n\s+- alert:|\Z)", rules, re.DOTALL
    )
    alerts = re.findall(r"- alert: (\w+)", rules)

    assert len(expressions) == len(alerts)
    assert [metric for metric in METRICS if not any(metric in expr for expr in expressions)] == []


def test_the_metrics_down_rule_watches_the_guides_scrape_job() -> None:
    [job] = re.findall(r"scrape_configs:\n  - job_name: (\S+)", OPERATIONS)
    assert re.findall(r"up\{job=\"([^\"]+)\"\} == 0", ALERTING) == [job]


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs promtool: run scripts/install-promtool.sh"
)
def test_the_rules_are_valid_and_fire_as_described(tmp_path: Path) -> None:
    [rules] = re.findall(r"```yaml\n(.*?)```", ALERTING, flags=re.DOTALL)
    (tmp_path / "rules.yml").write_text(rules)
    shutil.copy(ROOT / "tests" / "prometheus_rules_test.yml", tmp_path / "test.yml")

    for command in (["check", "rules", "rules.yml"], ["test", "rules", "test.yml"]):
        run = subprocess.run(["promtool", *command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


def test_the_mail_setting_it_shows_exists() -> None:
    assert '"MAIL_ADMINS_ON_FAILURE": True' in python_block("ADMINS")
    assert DECLARED["MAIL_ADMINS_ON_FAILURE"].default is False
