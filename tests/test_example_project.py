"""The example project, run as a user runs it: manage.py in subprocesses, against a live runserver.

The suite's own settings (tests.settings) do not install the example app, so everything here runs
in child processes with DJANGO_SETTINGS_MODULE=example_project.settings and a throwaway SQLite
file. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from tests.helpers import free_port
from tests.test_views import MORPH_EXAMPLE

ROOT = Path(__file__).resolve().parent.parent
# Variables the example reads; the developer's own values must not change what is tested.
EXAMPLE_VARIABLES = (
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "MORPH_WEBHOOKS_SECRET",
    "MORPH_API_URL",
    "MORPH_API_KEY",
    "MORPH_API_SECRET",
)
DEV_SECRET = "dev-only-morph-webhook-secret-change-me"

ACME, GLOBEX, INITECH = "Acme Corp - annual renewal", "Globex - 250 seat expansion", "Initech - pilot project"
CREATED, UPDATED, DELETED = "crmOpportunity::created", "crmOpportunity::updated", "crmOpportunity::deleted"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "example.sqlite3"


@pytest.fixture
def env(db_path: Path) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items() if name not in EXAMPLE_VARIABLES}
    environ.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        # Overrides a DATABASE_URL meant for the suite (CI points it at PostgreSQL).
        DATABASE_URL=f"sqlite:///{db_path}",
        PYTHONUNBUFFERED="1",
    )
    return environ


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A migrated example project served by runserver; yields its endpoint URL and its log file."""
    with serve(env, tmp_path) as (site, log_path):
        yield f"{site}/webhooks/morph/", log_path


def runserver(port: int) -> list[str]:
    return [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]


def gunicorn(port: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "example_project.wsgi", "--bind", f"127.0.0.1:{port}"]


@contextmanager
def serve(
    env: dict[str, str], tmp_path: Path, command: Callable[[int], list[str]] = runserver
) -> Iterator[tuple[str, Path]]:
    """Migrate and run the example project; yields its site URL and its log file."""
    migrate = manage(env, "migrate", "--no-input")
    assert migrate.returncode == 0, migrate.stderr
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command(port),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_listening(port, process, log_path)
            yield f"http://127.0.0.1:{port}", log_path
        finally:
            stop(process)


def stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_listening(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"The server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"The server did not listen on port {port} within 20 s:\n{log_path.read_text()}")


def test_check_passes_and_migrations_are_complete(env: dict[str, str]) -> None:
    check = manage(env, "check", "--fail-level", "WARNING")
    assert check.returncode == 0, check.stdout + check.stderr

    missing = manage(env, "makemigrations", "stage_history", "--check", "--dry-run")
    assert missing.returncode == 0, missing.stdout + missing.stderr


def test_send_example_events_to_a_live_server(
    env: dict[str, str], server: tuple[str, Path], db_path: Path
) -> None:
    url, log_path = server

    sent = manage(env, "send_example_events", "--url", url)

    assert sent.returncode == 0, sent.stdout + sent.stderr
    answers = [line.rpartition("-> ")[2] for line in sent.stdout.splitlines() if "-> " in line]
    assert all(answer.startswith("200 ") for answer in answers), sent.stdout
    statuses = Counter(json.loads(answer.removeprefix("200 "))["status"] for answer in answers)
    # The CRM's set-up (a pipeline, 6 stages, 2 users, 3 companies, 3 contacts), then the deals,
    # a call, a meeting, an email and a workspace; a phone system's call record is the one model
    # not stored.
    assert statuses == {"processed": 28, "duplicate": 1, "stale": 1, "ignored": 1}
    assert "Sent 31 events: 28 processed, 1 duplicate, 1 stale, 1 ignored." in sent.stdout
    # No login exists yet in this database: the command says how to make one.
    assert "create a login with: python manage.py createsuperuser" in sent.stdout

    # Again: the same events (ids, keys), answered as Morph's re-sends are, and no new deal.
    again = manage(env, "send_example_events", "--url", url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Sent 31 events: 31 duplicate." in again.stdout
    assert "Every event was sent before, with the same ids and keys" in again.stdout

    with closing(sqlite3.connect(db_path)) as db:  # sqlite3's own `with` does not close
        opportunities = db.execute(
            "SELECT name, stage_id, amount, currency, deleted_at IS NOT NULL FROM morph_webhooks_opportunity"
        ).fetchall()
        history = db.execute(
            "SELECT o.name, s.from_stage_id, s.to_stage_id, s.event FROM stage_history_stagechange s"
            " JOIN morph_webhooks_opportunity o ON o.id = s.opportunity_id ORDER BY s.id"
        ).fetchall()
        stages = db.execute("SELECT remote_id, name, type FROM morph_webhooks_stage").fetchall()
        engagements = db.execute(
            "SELECT type, direction, status, duration, crm_owner_id, contact_ids FROM morph_webhooks_engagement"
            " ORDER BY id"
        ).fetchall()
        # The Acme deal's timeline, through the relation's pairs.
        timeline = db.execute(
            "SELECT e.type FROM morph_webhooks_engagement e"
            " JOIN morph_webhooks_engagementopportunity p ON p.engagement_ref = e.ref"
            " JOIN morph_webhooks_opportunity o ON o.ref = p.opportunity_ref"
            " WHERE o.name = ? ORDER BY e.started_at",
            [ACME],
        ).fetchall()
        workspaces = db.execute("SELECT remote_id, name FROM morph_webhooks_workspace").fetchall()
        names = [
            db.execute(f"SELECT COUNT(*) FROM morph_webhooks_{table}").fetchone()[0]
            for table in ("pipeline", "crmuser", "company", "contact")
        ]
        globex_changed_at, globex_updated_at = db.execute(
            "SELECT s.changed_at, o.remote_updated_at FROM stage_history_stagechange s"
            " JOIN morph_webhooks_opportunity o ON o.id = s.opportunity_id"
            " WHERE o.name = ? ORDER BY s.id DESC LIMIT 1",
            [GLOBEX],
        ).fetchone()

    assert engagements == [
        ("call", "outbound", "completed", 120, "user_2201", '["contact_ada"]'),
        ("meeting", "outbound", "planned", None, "user_2201", '["contact_ada"]'),
        ("email", "outbound", "completed", None, "user_2201", '["contact_ada"]'),
    ]
    assert timeline == [("call",), ("email",), ("meeting",)]
    assert workspaces == [("workspace_sales", "Sales")]
    assert sorted(opportunities) == [
        (ACME, "presentationscheduled", 52500, "EUR", 0),
        (GLOBEX, "closedwon", 91000, "USD", 0),
        (INITECH, "appointmentscheduled", 9900, "GBP", 1),
    ]
    # The duplicate, the stale update and the amount-only update recorded nothing.
    assert history == [
        (ACME, "", "appointmentscheduled", CREATED),
        (GLOBEX, "", "qualifiedtobuy", CREATED),
        (INITECH, "", "appointmentscheduled", CREATED),
        (ACME, "appointmentscheduled", "qualifiedtobuy", UPDATED),
        (ACME, "qualifiedtobuy", "presentationscheduled", UPDATED),
        (GLOBEX, "qualifiedtobuy", "contractsent", UPDATED),
        (GLOBEX, "contractsent", "closedwon", UPDATED),
        (INITECH, "appointmentscheduled", "(deleted)", DELETED),
    ]
    assert globex_changed_at == globex_updated_at
    assert ("closedwon", "Closed won", "WON") in stages and len(stages) == 6
    assert names == [1, 2, 3, 3]

    server_log = log_path.read_text()
    # Written by the on_commit callback, so the transaction did commit.
    # The stage's name and type read through the relation, within the deal's connection.
    assert (
        f"Opportunity 2 ('{GLOBEX}') moved from contractsent to closedwon, now in 'Closed won' (WON)"
        in server_log
    )
    assert "token=[redacted]" in server_log
    assert DEV_SECRET not in server_log


def test_send_example_events_to_a_server_in_deferred_mode_says_to_start_a_worker(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["MORPH_WEBHOOKS_PROCESSING"] = "deferred"
    with serve(env, tmp_path) as (site, _):
        sent = manage(env, "send_example_events", "--url", f"{site}/webhooks/morph/")

    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "Sent 31 events: 30 queued, 1 duplicate." in sent.stdout
    assert (
        "30 events queued, none applied yet: the server runs in deferred mode. Start a worker in "
        "another terminal: python manage.py db_worker"
    ) in sent.stdout
    assert "Every answer was as expected" not in sent.stdout


def test_the_readmes_quickstart_curl_gets_the_answers_it_shows(env: dict[str, str], tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.partition("\n## Quickstart\n")[2].partition("\n## ")[0]
    [curl] = re.findall(r"```sh\n(curl .*?)```", quickstart, flags=re.DOTALL)
    shown = re.findall(r"It answers `(.*?)`, and the same request again `(.*?)`", quickstart)
    # Straight to the server, whatever proxy the environment names.
    environ = {name: value for name, value in env.items() if not name.lower().endswith("_proxy")}
    with serve(env, tmp_path) as (site, log_path):
        answers = [
            subprocess.run(
                ["bash", "-c", curl.replace("http://127.0.0.1:8000", site)],
                env=environ,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            for _ in range(2)
        ]
        # make run prints the URL the curl uses: the example's development secret as its token.
        printed = manage(env, "morph_webhooks_url", "http://127.0.0.1:8000").stdout.strip()

    assert shown == [tuple(answers)], log_path.read_text()
    assert printed in curl
    # The body is Morph's documented example, as the endpoint's own tests send it.
    assert json.loads(curl.partition("-d '")[2].rpartition("'")[0]) == json.loads(MORPH_EXAMPLE)


def test_make_run_prints_the_webhook_url_beside_the_admin_login() -> None:
    planned = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=30)

    admin = planned.stdout.index("Admin: http://127.0.0.1:8000/admin/ (admin / admin).")
    webhook = planned.stdout.index("manage.py morph_webhooks_url http://127.0.0.1:8000")
    assert admin < webhook


def test_send_example_events_names_the_login_make_run_created(
    env: dict[str, str], server: tuple[str, Path]
) -> None:
    url, _ = server
    # What `make run` does before starting the server.
    created = manage(
        {**env, "DJANGO_SUPERUSER_PASSWORD": "admin"},
        *("createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"),
    )
    assert created.returncode == 0, created.stderr

    sent = manage(env, "send_example_events", "--url", url)

    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "(log in as admin)." in sent.stdout
    assert "createsuperuser" not in sent.stdout


def test_a_post_without_the_trailing_slash_is_taken_with_the_secret_out_of_the_console(
    server: tuple[str, Path],
) -> None:
    url, log_path = server
    # DEBUG is on: were the URL not routed, CommonMiddleware would raise rather than redirect a POST.
    event = {
        "event": "telephonyCall::created",
        "data": {"object": "resource", "model": "telephonyCall", "id": "c1", "fields": {}},
    }
    request = urllib.request.Request(
        f"{url.rstrip('/')}?token={DEV_SECRET}",
        data=json.dumps(event).encode(),
        headers={
            "Content-Type": "application/json",
            "x-conector-id": "hubspot",
            "x-owner-id": "tenant_1",
            "x-idempotency-key": "k1",
        },
        method="POST",
    )

    with urllib.request.urlopen(request, timeout=10) as response:
        assert (response.status, json.loads(response.read())) == (200, {"status": "ignored"})

    # runserver writes its request line once the answer is sent.
    server_log = logged(log_path, '"POST /webhooks/morph?token=[redacted] HTTP/1.1" 200')
    assert DEV_SECRET not in server_log


def logged(log_path: Path, text: str) -> str:
    """The server's log once it holds ``text``."""
    deadline = time.monotonic() + 10
    while text not in (log := log_path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in log, log
    return log


def post_chunked(site: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST ``body`` in 64 KiB chunks without a Content-Length, as some proxies forward requests."""
    host, _, port = site.removeprefix("http://").partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))
        headers = {
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            "x-conector-id": "hubspot",
            "x-owner-id": "tenant_1",
            "x-idempotency-key": f"chunked-{len(body)}",
        }
        connection.request(
            "POST", f"/webhooks/morph/?token={DEV_SECRET}", body=chunks, headers=headers, encode_chunked=True
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_chunked_body_is_read_by_gunicorn_and_refused_by_runserver(
    env: dict[str, str], tmp_path: Path
) -> None:
    event = {
        "event": "telephonyCall::created",
        "data": {"object": "resource", "model": "telephonyCall", "id": "c1", "fields": {}},
    }
    body = json.dumps(event).encode()
    too_large = body + b" " * (1024 * 1024)
    with serve(env, tmp_path, gunicorn) as (site, log_path):
        assert post_chunked(site, body) == (200, {"status": "ignored"}), log_path.read_text()
        assert post_chunked(site, too_large)[0] == 413
    with serve(env, tmp_path) as (site, _):
        status, answer = post_chunked(site, body)

    assert (status, answer["error"]) == (411, "length_required")


def test_send_example_events_without_a_server(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/webhooks/morph/"

    sent = manage(env, "send_example_events", "--url", url)

    assert sent.returncode != 0
    assert "Traceback" not in sent.stderr
    assert f"Could not reach {url}" in sent.stderr
    assert "python manage.py runserver" in sent.stderr


def test_morphs_api_settings_come_from_the_environment(env: dict[str, str]) -> None:
    env |= {"MORPH_API_URL": "http://127.0.0.1:9", "MORPH_API_KEY": "key", "MORPH_API_SECRET": "secret"}
    shown = manage(
        env,
        "shell",
        "-c",
        "from morph_webhooks.conf import conf; print(conf.API_URL, conf.API_KEY, conf.API_SECRET)",
    )

    assert shown.returncode == 0, shown.stderr
    assert "http://127.0.0.1:9 key secret" in shown.stdout


def test_settings_come_from_the_environment(env: dict[str, str]) -> None:
    env["MORPH_WEBHOOKS_SECRET"] = " first-secret-0123456789abcdef , ,second-secret-0123456789abcdef,"
    env["MORPH_WEBHOOKS_PROCESSING"] = "deferred"
    env["MORPH_WEBHOOKS_QUEUE"] = "deliveries"
    shown = manage(env, "shell", "-c", "from django.conf import settings; print(settings.MORPH_WEBHOOKS)")

    assert shown.returncode == 0, shown.stderr
    assert (
        "{'SECRETS': ['first-secret-0123456789abcdef', 'second-secret-0123456789abcdef'], 'PROCESSING': 'deferred', "
        "'QUEUE': 'deliveries', 'METRICS': True}" in shown.stdout
    )


@pytest.mark.parametrize(
    ("database_url", "settings"),
    [
        # Persistent, and checked before each reuse: a new PostgreSQL backend per request would
        # cost more than the request itself.
        ("postgres://user@127.0.0.1:5432/morph", "django.db.backends.postgresql 600 True"),
        # SQLite opens a file, not a server process: nothing to keep.
        (None, "django.db.backends.sqlite3 0 True"),
    ],
)
def test_database_connections(env: dict[str, str], database_url: str | None, settings: str) -> None:
    if database_url:
        env["DATABASE_URL"] = database_url
    shown = manage(
        env,
        "shell",
        "-c",
        "from django.conf import settings; database = settings.DATABASES['default']; "
        "print(database['ENGINE'], database['CONN_MAX_AGE'], database['CONN_HEALTH_CHECKS'])",
    )

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[-1] == settings


def test_debug_off_refuses_the_development_defaults(env: dict[str, str]) -> None:
    env["DJANGO_DEBUG"] = "0"

    refused = manage(env, "check")

    assert refused.returncode != 0
    assert "DEBUG is off but a public development default is in use" in refused.stderr


def test_webhook_url_and_check_against_the_running_example(
    env: dict[str, str], tmp_path: Path, db_path: Path
) -> None:
    with serve(env, tmp_path) as (site, _):
        url = manage(env, "morph_webhooks_url", site)
        check = manage(env, "morph_webhooks_check", site)

    assert url.returncode == 0 and url.stdout == f"{site}/webhooks/morph/?token={DEV_SECRET}\n", url.stderr
    assert check.returncode == 0, check.stdout + check.stderr
    assert (
        "OK: delivery 1 was authenticated, validated and processed (ignored), then removed." in check.stdout
    )
    # Nothing of the check lasts: no request logged, no key, no connection for the admin, the
    # metrics or the health check's silence to show.
    with closing(sqlite3.connect(db_path)) as db:  # sqlite3's own `with` does not close
        for table in ("webhookdelivery", "idempotencykey", "connection", "opportunity"):
            assert db.execute(f"SELECT COUNT(*) FROM morph_webhooks_{table}").fetchone() == (0,), table
    health = manage(env, "morph_webhooks_health")
    assert health.returncode == 0, health.stdout + health.stderr
    assert "No connection silent (0 heard from)." in health.stdout


def test_check_in_deferred_mode_needs_a_worker(env: dict[str, str], tmp_path: Path) -> None:
    env["MORPH_WEBHOOKS_PROCESSING"] = "deferred"
    with serve(env, tmp_path) as (site, _):
        alone = manage(env, "morph_webhooks_check", site, "--wait", "1")
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-startup-delay"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with_worker = manage(env, "morph_webhooks_check", site)
        finally:
            stop(worker)

    assert alone.returncode == 1
    assert "Still queued after 1 s: no worker is processing queue 'default'" in alone.stderr
    assert with_worker.returncode == 0, with_worker.stdout + with_worker.stderr
    assert "Queued; waiting up to 30 s for a worker..." in with_worker.stdout
    assert "processed (ignored), then removed." in with_worker.stdout


@pytest.mark.django_db
def test_check_run_with_settings_other_than_the_servers(env: dict[str, str], tmp_path: Path) -> None:
    # The command runs here, with the suite's settings; the server is the example project.
    with serve(env, tmp_path) as (site, _):
        with override_settings(MORPH_WEBHOOKS={"SECRETS": ["another-secret-0123456789abcdef"]}):
            wrong_secret = check_error(site)
        with override_settings(MORPH_WEBHOOKS={"SECRETS": [DEV_SECRET]}):
            other_database = check_error(site)

    assert "The running server does not accept this project's secret" in wrong_secret
    assert "this database has no record of the request" in other_database


@pytest.mark.django_db
def test_check_run_with_settings_that_have_no_shared_secret(env: dict[str, str], tmp_path: Path) -> None:
    signing_secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    with serve(env, tmp_path) as (site, _):
        with override_settings(MORPH_WEBHOOKS={"ALLOW_UNAUTHENTICATED": True}):
            without_secret = check_error(site)
        with override_settings(MORPH_WEBHOOKS={"SIGNING_SECRETS": [signing_secret]}):
            signed = check_error(site)

    assert without_secret == (
        "The running server wants a secret, and the settings this command runs with have none."
    )
    assert signed.startswith("The running server wants a shared secret")


def check_error(site: str) -> str:
    with pytest.raises(CommandError) as error:
        call_command("morph_webhooks_check", site, stdout=StringIO())
    return str(error.value)
