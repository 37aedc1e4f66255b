"""morph_webhooks_sync's output: a progress line per model on a terminal, the summary alone
otherwise (cron, CI, a pipe)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

from morph_webhooks.testing.fake_api import FakeMorphAPI
from tests.test_sync import CONNECTOR, OPPORTUNITIES, OWNER, deal, deals, fake_api, sync_tenant  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def test_without_a_terminal_only_the_summary_is_written(deals, db):  # noqa: F811
    assert sync_tenant() == (
        "Syncing hubspot / tenant_1\n"
        "  crmOpportunity: 2 pages, 3 resources: 3 created, 0 updated, 0 unchanged, 0 stale, 0 deleted, 0 failed\n"
        "hubspot / tenant_1: ok: 3 created, 0 updated, 0 unchanged, 0 stale, 0 deleted, 0 failed\n"
    )


def test_on_a_terminal_each_page_updates_the_models_progress_line(tmp_path):
    with FakeMorphAPI() as api:
        api.add(CONNECTOR, OWNER, OPPORTUNITIES, [deal(f"opp_{index}") for index in range(5)])
        api.fail(None, delay=0.3, page=1)
        output = run_on_a_terminal(api, tmp_path / "db.sqlite3")

    lines = output.replace("\r\n", "\n").split("\n")
    assert lines[0] == "Syncing hubspot / tenant_1"
    # One line, rewritten after each page, then wiped for the model's summary.
    shown = lines[1].split("\r")
    assert [text.rsplit(",", 1)[0] for text in shown[1:4]] == [
        "  crmOpportunity: 1 page, 2 resources",
        "  crmOpportunity: 2 pages, 4 resources",
        "  crmOpportunity: 3 pages, 5 resources",
    ]
    assert all(text.endswith("/s") for text in shown[1:4])
    assert shown[4].strip() == "" and len(shown[4]) == len(shown[3])
    assert shown[5] == (
        "  crmOpportunity: 3 pages, 5 resources: 5 created, 0 updated, 0 unchanged, 0 stale, 0 deleted, 0 failed"
    )
    assert lines[2].startswith("hubspot / tenant_1: ok: 5 created")


def run_on_a_terminal(api: FakeMorphAPI, database: Path) -> str:
    """morph_webhooks_sync in another process whose stdout is a pseudo-terminal; what it showed."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "MORPH_WEBHOOKS_API_URL": api.url,
        "MORPH_WEBHOOKS_API_KEY": api.key,
        "MORPH_WEBHOOKS_API_SECRET": api.secret,
    }
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v0"], env=env, cwd=ROOT, check=True)
    controller, terminal = pty.openpty()
    sync = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "settings.MORPH_WEBHOOKS['API_PAGE_SIZE'] = 2; "
            "from django.core.management import call_command; "
            f"call_command('morph_webhooks_sync', '--connector', {CONNECTOR!r}, '--owner', {OWNER!r}, "
            f"'--model', {OPPORTUNITIES!r})",
        ],
        env=env,
        cwd=ROOT,
        stdout=terminal,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    _, errors = sync.communicate(timeout=30)  # also closes the stderr pipe
    assert sync.returncode == 0, errors
    return output.decode()
