"""morph_webhooks_fake_api: the fake Morph API the example project's walkthrough syncs from."""

from __future__ import annotations

import ast
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from morph_webhooks.models import Company, Connection, CrmUser, Opportunity, Pipeline, Stage
from morph_webhooks.testing.fake_crm import fake_crm
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_a_sync_from_the_fake_api_command_fills_the_local_copy(settings):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "morph_webhooks_fake_api",
            "--port",
            str(port),
            "--opportunities",
            "25",
        ],
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONUNBUFFERED": "1",
        },
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        assert banner.startswith(f"A fake Morph API on http://127.0.0.1:{port}, serving "), banner
        assert "25 crmOpportunity for hubspot / tenant_1" in banner
        hint = "".join(iter(server.stdout.readline, "Quit with CONTROL-C.\n"))
        # The settings any project reads, as Python to paste into MORPH_WEBHOOKS.
        printed = ast.literal_eval("{" + hint.partition("\n")[2].rpartition("then sync")[0] + "}")
        assert printed["API_URL"] == f"http://127.0.0.1:{port}"
        # The interpreter that runs the command: the one that has the app installed.
        assert f"  {sys.executable} manage.py morph_webhooks_sync --connector hubspot" in hint
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, **printed}

        out = io.StringIO()
        call_command("morph_webhooks_sync", "--connector", "hubspot", "--owner", "tenant_1", stdout=out)
    finally:
        server.send_signal(signal.SIGINT)
        _, errors = server.communicate(timeout=10)

    assert server.returncode == 0, errors
    assert "hubspot / tenant_1: ok" in out.getvalue()
    assert Opportunity.objects.count() == 25
    assert (Pipeline.objects.count(), Stage.objects.count(), CrmUser.objects.count()) == (1, 7, 8)
    assert Company.objects.count() == 60
    assert Connection.objects.get().last_sync_outcome == "succeeded"
    # Every deal's stage, owner and company is one the fake serves.
    deal = Opportunity.objects.order_by("remote_id").first()
    assert deal is not None and deal.stage_id.startswith("stage_") and deal.amount > 0


def test_the_same_seed_makes_the_same_crm():
    assert list(fake_crm(10, seed=3)) == list(fake_crm(10, seed=3))
    assert list(fake_crm(10, seed=3)) != list(fake_crm(10, seed=4))
