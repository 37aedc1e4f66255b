"""Prometheus metrics: each metric's value after known traffic, bounded labels, the scrape's
authentication and statements, a project's own registry, the app without prometheus-client; and
the example project under a real multi-worker gunicorn (and a db_worker) in multiprocess mode."""

from __future__ import annotations

import http.client
import json
import os
import re
import runpy
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from morph_webhooks import metrics, signals
from morph_webhooks.checks import check_settings
from morph_webhooks.intake import run_delivery
from morph_webhooks.models import Connection, Outcome, SyncOutcome, WebhookDelivery
from morph_webhooks.testing import morph_headers, opportunity_event, post_event, resource_event
from morph_webhooks.testing.factories import WebhookDeliveryFactory
from tests.helpers import SECRET, URL, at, free_port, postgresql_only, raising_receiver
from tests.test_example_project import DEV_SECRET, EXAMPLE_VARIABLES, manage, stop, wait_until_listening

pytestmark = pytest.mark.django_db

METRICS_URL = f"{URL}metrics/"
ROOT = Path(__file__).resolve().parent.parent

Samples = Counter[tuple[str, frozenset[tuple[str, str]]]]


@pytest.fixture
def metrics_on(settings: Any) -> Any:
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "METRICS": True}
    return settings


def parse(text: str) -> Samples:
    samples: Samples = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(client: Any) -> Samples:
    response = client.get(METRICS_URL, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 200, response.content
    return parse(response.content.decode())


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def delivered(before: Samples, after: Samples) -> Counter[tuple[str, str, str]]:
    """What morph_webhooks_deliveries_total counted between two scrapes: (outcome, model,
    connector) to how many."""
    counted: Counter[tuple[str, str, str]] = Counter()
    for (name, label_set), value in after.items():
        if name == "morph_webhooks_deliveries_total" and value != before[(name, label_set)]:
            values = dict(label_set)
            counted[(values["outcome"], values["model"], values["connector"])] = int(
                value - before[(name, label_set)]
            )
    return counted


def processing_count(samples: Samples, model: str, mode: str) -> float:
    return samples[("morph_webhooks_processing_seconds_count", labels(model=model, mode=mode))]


class TestScrape:
    def test_url_name(self):
        assert reverse("morph_webhooks:metrics") == METRICS_URL

    def test_without_credentials_is_401(self, client, metrics_on):
        response = client.get(METRICS_URL)
        assert response.status_code == 401
        assert response.json()["error"] == "not_authenticated"
        assert client.get(METRICS_URL, {"token": "wrong"}).status_code == 401

    def test_with_a_token_or_bearer_is_prometheus_text(self, client, metrics_on):
        response = client.get(METRICS_URL, {"token": SECRET})

        assert response.status_code == 200
        assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert response["Cache-Control"] == "no-store"
        names = {family.name for family in text_string_to_metric_families(response.content.decode())}
        assert {
            "morph_webhooks_deliveries",
            "morph_webhooks_processing_seconds",
            "morph_webhooks_queued",
            "morph_webhooks_oldest_queued_seconds",
            "morph_webhooks_dead",
            "morph_webhooks_last_event_timestamp_seconds",
            "morph_webhooks_silence_threshold_seconds",
            "morph_webhooks_last_sync_timestamp_seconds",
        } <= names
        assert client.get(METRICS_URL, headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200

    def test_outside_the_allowed_networks_is_403(self, client, metrics_on):
        metrics_on.MORPH_WEBHOOKS = {**metrics_on.MORPH_WEBHOOKS, "ALLOWED_NETWORKS": ["10.0.0.0/8"]}
        assert client.get(METRICS_URL, {"token": SECRET}).status_code == 403

    def test_off_is_404_naming_the_setting(self, client):
        response = client.get(METRICS_URL, {"token": SECRET})
        assert response.status_code == 404
        assert response.json() == {
            "error": "metrics_unavailable",
            "detail": "Metrics are off: set MORPH_WEBHOOKS['METRICS'] = True "
            "(and pip install '/path/to/morph-webhooks[metrics]').",
        }

    def test_two_statements_whatever_the_deliveries_and_connections(
        self, client, metrics_on, django_assert_num_queries
    ):
        with django_assert_num_queries(2):
            scrape(client)
        for number in range(5):
            Connection.objects.create(connector_id="hubspot", owner_id=f"tenant_{number}")
            WebhookDeliveryFactory(connector_id="hubspot", owner_id=f"tenant_{number}")
            WebhookDeliveryFactory(status=Outcome.QUEUED)
        with django_assert_num_queries(2):
            scrape(client)


class TestDeliveries:
    def test_each_answered_request_is_counted_by_outcome_model_and_connector(
        self, client, metrics_on, known_connection
    ):
        before = scrape(client)

        for number in range(3):
            post_event(
                client, opportunity_event(remote_id=f"opp_{number}"), headers=morph_headers(f"k{number}")
            )
        post_event(client, opportunity_event(remote_id="opp_0"), headers=morph_headers("k0"))
        post_event(
            client,
            opportunity_event("updated", remote_id="opp_1", updated_at=at(-60)),
            headers=morph_headers(),
        )
        post_event(client, resource_event("telephonyCall"), headers=morph_headers())
        post_event(client, {"event": "nonsense"}, headers=morph_headers())
        client.post(URL, data="{}", content_type="text/csv", headers={"Authorization": f"Bearer {SECRET}"})
        with raising_receiver(signals.opportunity_created, RuntimeError, "receiver exploded"):
            post_event(client, opportunity_event(remote_id="opp_boom"), headers=morph_headers())

        assert delivered(before, scrape(client)) == {
            ("processed", "crmOpportunity", "hubspot"): 3,
            ("duplicate", "crmOpportunity", "hubspot"): 1,
            ("stale", "crmOpportunity", "hubspot"): 1,
            # Not a model the app mirrors: the sender chooses its name, so it labels nothing.
            ("ignored", "", "hubspot"): 1,
            ("invalid_event", "", ""): 1,
            ("unsupported_media_type", "", ""): 1,
            ("processing_failed", "crmOpportunity", "hubspot"): 1,
        }

    def test_a_rejected_request_adds_no_label_value_of_its_own(self, client, metrics_on, settings):
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "ALLOWED_CONNECTORS": ["hubspot"]}
        before = scrape(client)
        hostile = "evil-connector-0123"
        headers = morph_headers("hostile-key", connector_id=hostile, owner_id="hostile-owner")

        unauthenticated = client.post(
            URL, data=opportunity_event(), content_type="application/json", headers=headers
        )
        wrong_token = post_event(client, opportunity_event(), headers=headers, secret="wrong")
        refused = post_event(client, opportunity_event(), headers=headers)

        assert (unauthenticated.status_code, wrong_token.status_code, refused.status_code) == (401, 401, 403)
        after = client.get(METRICS_URL, {"token": SECRET}).content.decode()
        assert delivered(before, parse(after)) == {
            ("not_authenticated", "", ""): 1,
            ("authentication_failed", "", ""): 1,
            # Authenticated, but a connector the policy refuses: not one to label either.
            ("permission_denied", "", ""): 1,
        }
        assert hostile not in after and "hostile-key" not in after and "hostile-owner" not in after

    def test_no_key_id_or_owner_becomes_a_label(self, client, metrics_on):
        post_event(client, opportunity_event(remote_id="opp_secret_id"), headers=morph_headers("key-abc"))

        text = client.get(METRICS_URL, {"token": SECRET}).content.decode()
        counted = [line for line in text.splitlines() if line.startswith("morph_webhooks_deliveries_total")]
        assert counted and all("opp_secret_id" not in line and "key-abc" not in line for line in counted)
        assert all("tenant_1" not in line for line in counted)

    def test_a_405_is_counted_by_its_code(self, client, metrics_on):
        before = scrape(client)
        client.get(URL, {"token": SECRET})
        assert delivered(before, scrape(client)) == {("method_not_allowed", "", ""): 1}

    def test_deferred_mode_counts_queued_and_the_worker_time(self, client, metrics_on, settings):
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred"}
        settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
        before = scrape(client)

        assert post_event(client, opportunity_event()).json() == {"status": "queued"}
        queued = scrape(client)
        assert processing_count(queued, "crmOpportunity", "deferred") == (
            processing_count(before, "crmOpportunity", "deferred")
        )
        # What the worker runs for the task.
        assert run_delivery(WebhookDelivery.objects.get().pk) == Outcome.PROCESSED

        after = scrape(client)
        assert delivered(before, after) == {("queued", "crmOpportunity", "hubspot"): 1}
        assert processing_count(after, "crmOpportunity", "deferred") == (
            processing_count(before, "crmOpportunity", "deferred") + 1
        )
        assert processing_count(after, "crmOpportunity", "sync") == processing_count(
            before, "crmOpportunity", "sync"
        )

    def test_off_counts_nothing(self, client, settings):
        before = metrics.DELIVERIES.collect()[0].samples
        post_event(client, opportunity_event())
        assert metrics.DELIVERIES.collect()[0].samples == before


class TestProcessing:
    def test_each_event_applied_in_the_request_is_timed(self, client, metrics_on):
        before = scrape(client)

        for number in range(3):
            post_event(client, opportunity_event(remote_id=f"opp_{number}"))
        post_event(client, resource_event("telephonyCall"))
        post_event(client, {"event": "nonsense"})  # refused before processing

        after = scrape(client)
        assert (
            processing_count(after, "crmOpportunity", "sync")
            - processing_count(before, "crmOpportunity", "sync")
            == 3
        )
        assert processing_count(after, "", "sync") - processing_count(before, "", "sync") == 1
        total = ("morph_webhooks_processing_seconds_sum", labels(model="crmOpportunity", mode="sync"))
        assert after[total] > before[total]

    def test_a_failed_processing_is_timed_too(self, client, metrics_on):
        before = scrape(client)
        with raising_receiver(signals.opportunity_created, RuntimeError, "receiver exploded"):
            assert post_event(client, opportunity_event()).status_code == 500
        after = scrape(client)
        assert processing_count(after, "crmOpportunity", "sync") == (
            processing_count(before, "crmOpportunity", "sync") + 1
        )


def received(seconds_ago: float, **fields: Any) -> WebhookDelivery:
    made = WebhookDeliveryFactory(**fields)
    WebhookDelivery.objects.filter(pk=made.pk).update(
        received_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return made


class TestDatabaseGauges:
    def test_nothing_queued_or_dead(self, client, metrics_on):
        received(60, status=Outcome.PROCESSED)
        samples = scrape(client)
        assert samples[("morph_webhooks_queued", labels())] == 0
        assert samples[("morph_webhooks_oldest_queued_seconds", labels())] == 0
        assert samples[("morph_webhooks_dead", labels())] == 0

    def test_queued_oldest_and_dead(self, client, metrics_on):
        received(600, status=Outcome.QUEUED, http_status=200)
        received(30, status=Outcome.QUEUED, http_status=200)
        received(7200, status=Outcome.DEAD, http_status=200)
        received(9000, status=Outcome.PROCESSED)

        samples = scrape(client)

        assert samples[("morph_webhooks_queued", labels())] == 2
        assert 600 <= samples[("morph_webhooks_oldest_queued_seconds", labels())] < 660
        assert samples[("morph_webhooks_dead", labels())] == 1

    def test_last_event_and_last_sync_per_connection(self, client, metrics_on):
        finished = timezone.now() - timedelta(hours=2)
        started = timezone.now() - timedelta(minutes=5)
        Connection.objects.create(
            connector_id="hubspot",
            owner_id="tenant_1",
            last_sync_started_at=finished - timedelta(minutes=1),
            last_sync_finished_at=finished,
            last_sync_outcome=SyncOutcome.SUCCEEDED,
        )
        Connection.objects.create(
            connector_id="hubspot",
            owner_id="tenant_2",
            last_sync_started_at=started,
            last_sync_outcome=SyncOutcome.FAILED,  # the one before, still running
        )
        Connection.objects.create(connector_id="pipedrive", owner_id="tenant_3")  # never heard from
        newest = received(120, connector_id="hubspot", owner_id="tenant_1")
        received(3600, connector_id="hubspot", owner_id="tenant_1")
        received(10, connector_id="hubspot", owner_id="tenant_9")  # no such connection

        samples = scrape(client)

        newest.refresh_from_db()
        last_events = {
            dict(label_set)["owner"]: value
            for (name, label_set), value in samples.items()
            if name == "morph_webhooks_last_event_timestamp_seconds"
        }
        assert last_events == {"tenant_1": pytest.approx(newest.received_at.timestamp())}
        last_syncs = {
            (dict(label_set)["owner"], dict(label_set)["outcome"]): value
            for (name, label_set), value in samples.items()
            if name == "morph_webhooks_last_sync_timestamp_seconds"
        }
        assert last_syncs == {
            ("tenant_1", "succeeded"): pytest.approx(finished.timestamp()),
            ("tenant_2", "started"): pytest.approx(started.timestamp()),
        }

    def test_each_heard_connections_silence_threshold_as_the_health_check_judges_it(self, client, metrics_on):
        metrics_on.MORPH_WEBHOOKS = {
            **metrics_on.MORPH_WEBHOOKS,
            "SILENCE_THRESHOLD": 3600,
            "SILENCE_OVERRIDES": {"hubspot/tenant_7": 604800, "hubspot/tenant_8": 0},
        }
        for owner in ("tenant_1", "tenant_7", "tenant_8", "tenant_9"):
            Connection.objects.create(connector_id="hubspot", owner_id=owner)
        for owner in ("tenant_1", "tenant_7", "tenant_8"):  # tenant_9: never heard from
            received(60, connector_id="hubspot", owner_id=owner)

        samples = scrape(client)

        thresholds = {
            dict(label_set)["owner"]: value
            for (name, label_set), value in samples.items()
            if name == "morph_webhooks_silence_threshold_seconds"
        }
        assert thresholds == {"tenant_1": 3600, "tenant_7": 604800}  # tenant_8 is exempt

    @postgresql_only
    def test_each_statement_is_answered_by_an_index(self, client, metrics_on):
        """EXPLAIN on a request log large enough for the planner to prefer an index if it can."""
        WebhookDelivery.objects.bulk_create(
            WebhookDelivery(
                path=URL,
                status=Outcome.PROCESSED,
                http_status=200,
                connector_id="hubspot",
                owner_id=f"tenant_{number % 20}",
            )
            for number in range(20000)
        )
        for owner in range(20):
            Connection.objects.create(connector_id="hubspot", owner_id=f"tenant_{owner}")
        received(60, status=Outcome.QUEUED, http_status=200)
        received(60, status=Outcome.DEAD, http_status=200)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE morph_webhooks_webhookdelivery")
            cursor.execute("ANALYZE morph_webhooks_connection")
        with CaptureQueriesContext(connection) as captured:
            list(metrics.database_metrics())
        queue_sql, connections_sql = (query["sql"] for query in captured.captured_queries)

        queue_plan = explain(queue_sql)
        connections_plan = explain(connections_sql)

        assert "morph_delivery_status_idx" in queue_plan, queue_plan
        assert "Seq Scan on morph_webhooks_webhookdelivery" not in queue_plan, queue_plan
        assert "morph_delivery_conn_idx" in connections_plan, connections_plan
        assert "Seq Scan on morph_webhooks_webhookdelivery" not in connections_plan, connections_plan


def explain(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


class TestProjectRegistry:
    def test_register_adds_every_metric_once(self, client, metrics_on):
        registry = CollectorRegistry()
        metrics.register(registry)
        metrics.register(registry)  # a second call changes nothing
        before = parse(generate_latest(registry).decode())

        post_event(client, opportunity_event())

        after = parse(generate_latest(registry).decode())
        assert delivered(before, after) == {("processed", "crmOpportunity", "hubspot"): 1}
        assert after[("morph_webhooks_queued", labels())] == 0
        assert (
            "morph_webhooks_processing_seconds_count",
            labels(model="crmOpportunity", mode="sync"),
        ) in after

    def test_registering_runs_no_query(self, django_assert_num_queries):
        with django_assert_num_queries(0):
            metrics.register(CollectorRegistry(auto_describe=True))

    def test_multiprocess_mode_adds_only_the_database_gauges(self, monkeypatch, tmp_path):
        # The counters reach the project's exporter from the shared directory's files.
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        registry = CollectorRegistry()
        metrics.register(registry)
        names = {family.name for family in registry.collect()}
        assert "morph_webhooks_queued" in names
        assert not {"morph_webhooks_deliveries", "morph_webhooks_processing_seconds"} & names


class TestWithoutPrometheusClient:
    def test_nothing_is_counted_and_the_url_says_what_to_install(self, client, metrics_on, monkeypatch):
        monkeypatch.setattr(metrics, "INSTALLED", False)
        before = metrics.DELIVERIES.collect()[0].samples

        assert post_event(client, opportunity_event()).json() == {"status": "processed"}
        response = client.get(METRICS_URL, {"token": SECRET})

        assert metrics.DELIVERIES.collect()[0].samples == before
        assert response.status_code == 404
        assert response.json()["detail"] == (
            "Metrics need prometheus-client: pip install '/path/to/morph-webhooks[metrics]'."
        )
        with pytest.raises(ImportError, match=r"pip install '/path/to/morph-webhooks\[metrics\]'"):
            metrics.register(CollectorRegistry())

    def test_the_check_says_what_to_install(self, metrics_on, monkeypatch):
        monkeypatch.setattr("morph_webhooks.checks.find_spec", lambda name: None)
        [message] = check_settings()
        assert message.id == "morph_webhooks.E015"
        assert "pip install '/path/to/morph-webhooks[metrics]'" in message.hint

    def test_the_check_is_silent_when_metrics_are_off(self, monkeypatch):
        monkeypatch.setattr("morph_webhooks.checks.find_spec", lambda name: None)
        assert check_settings() == []

    def test_the_app_imports_without_it(self):
        # A fresh interpreter in which prometheus_client cannot be imported.
        script = (
            "import sys; sys.modules['prometheus_client'] = None\n"
            "import django; django.setup()\n"
            "from morph_webhooks import apply, metrics, urls, views\n"
            "assert not metrics.INSTALLED\n"
            "print('imported')\n"
        )
        completed = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.strip() == "imported"


def test_counting_adds_no_statement_to_a_request(client, settings, known_connection):
    def statement_count(remote_id: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert post_event(client, opportunity_event(remote_id=remote_id)).status_code == 200
        return len(captured.captured_queries)

    off = statement_count("opp_off")
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "METRICS": True}
    assert statement_count("opp_on") == off


# Under gunicorn: several worker processes, prometheus-client's multiprocess mode, real scrapes.


@dataclass
class Site:
    url: str
    db_path: Path
    directory: Path  # PROMETHEUS_MULTIPROC_DIR
    env: dict[str, str]
    master: subprocess.Popen[bytes]
    log_path: Path


@contextmanager
def gunicorn_example(tmp_path: Path, **variables: str) -> Iterator[Site]:
    """The example project under gunicorn with 3 workers, in multiprocess mode."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left by an earlier run")
    db_path = tmp_path / "example.sqlite3"
    env = {name: value for name, value in os.environ.items() if name not in EXAMPLE_VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        DATABASE_URL=f"sqlite:///{db_path}",
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        PYTHONUNBUFFERED="1",
        **variables,
    )
    migrate = manage(env, "migrate", "--no-input")
    assert migrate.returncode == 0, migrate.stderr
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "example_project/gunicorn.conf.py"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            # At debug level each worker logs "POST <path>" once it has read a request's headers.
            [*command, "--bind", f"127.0.0.1:{port}", "--workers", "3", "--log-level", "debug"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_listening(port, process, log_path)
            yield Site(f"http://127.0.0.1:{port}", db_path, directory, env, process, log_path)
        finally:
            stop(process)


def send(site: str, body: Any, key: str, *, token: str | None = DEV_SECRET, **headers: str) -> int:
    query = f"?token={token}" if token else ""
    request = urllib.request.Request(
        f"{site}{URL}{query}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **morph_headers(key), **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def send_one_to_each_worker(example: Site, sent: list[tuple[Any, str]]) -> list[int]:
    """Send one event to each of ``len(sent)`` workers: a sync worker busy with a request accepts
    no other, so each request's body is held back until that many workers have read the headers
    of one (gunicorn logs "POST <path>" then, under the worker's pid)."""
    held = []
    for body, key in sent:
        data = json.dumps(body).encode()
        request = http.client.HTTPConnection(urllib.parse.urlsplit(example.url).netloc, timeout=30)
        request.putrequest("POST", f"{URL}?token={DEV_SECRET}")
        for name, value in {"Content-Type": "application/json", **morph_headers(key)}.items():
            request.putheader(name, value)
        request.putheader("Content-Length", str(len(data)))
        request.endheaders(data[:-1])
        held.append((request, data[-1:]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(posting_workers(example.log_path)) < len(sent):
        time.sleep(0.05)
    assert len(posting_workers(example.log_path)) == len(sent), example.log_path.read_text()
    statuses = []
    for request, rest in held:
        request.send(rest)
        with closing(request):
            statuses.append(request.getresponse().status)
    return statuses


def posting_workers(log_path: Path) -> set[str]:
    return set(re.findall(rf"\[(\d+)\] \[DEBUG\] POST {re.escape(URL)}", log_path.read_text()))


def scrape_site(site: str, token: str | None = DEV_SECRET) -> tuple[int, str]:
    query = f"?token={token}" if token else ""
    try:
        with urllib.request.urlopen(f"{site}{METRICS_URL}{query}", timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def counted_by_outcome(text: str) -> Counter[str]:
    counted: Counter[str] = Counter()
    for (name, label_set), value in parse(text).items():
        if name == "morph_webhooks_deliveries_total":
            counted[dict(label_set)["outcome"]] += int(value)
    return counted


def request_log(db_path: Path) -> Counter[str]:
    """The example's WebhookDelivery rows by the outcome the endpoint answered."""
    with closing(sqlite3.connect(db_path)) as db:
        rows = db.execute(
            "SELECT status, http_status, COUNT(*) FROM morph_webhooks_webhookdelivery GROUP BY 1, 2"
        ).fetchall()
    answered = {("rejected", 400): "invalid_event"}
    return Counter({answered.get((status, code), status): count for status, code, count in rows})


def test_counts_add_up_to_the_request_log_under_several_gunicorn_workers(tmp_path):
    with gunicorn_example(tmp_path) as example:
        counts_add_up(example)


def counts_add_up(example: Site) -> None:
    site, db_path, directory = example.url, example.db_path, example.directory
    new = [(opportunity_event(remote_id=f"opp_{number}"), f"key_{number}") for number in range(12)]
    # Every worker counts some: the first three go one to each.
    assert send_one_to_each_worker(example, new[:3]) == [200] * 3
    again = [
        *((opportunity_event(remote_id=f"opp_{number}"), f"key_{number}") for number in range(3)),
        (opportunity_event("updated", remote_id="opp_5", updated_at=at(-60)), "key_stale"),
        (resource_event("telephonyCall"), "key_ignored"),
        ({"event": "nonsense"}, "key_invalid_1"),
        ({"data": {}}, "key_invalid_2"),
    ]
    hostile = "evil-connector-0123"
    with ThreadPoolExecutor(max_workers=6) as pool:
        assert set(pool.map(lambda sent: send(site, *sent), new[3:])) == {200}
        statuses = Counter(pool.map(lambda sent: send(site, *sent), again))
        refused = list(
            pool.map(lambda n: send(site, {}, f"k{n}", token=None, **{"x-conector-id": hostile}), range(4))
        )
        scrapes = list(pool.map(lambda _: scrape_site(site), range(6)))

    assert statuses == {200: 5, 400: 2} and refused == [401] * 4
    assert scrape_site(site, token=None)[0] == 401
    logged = request_log(db_path)
    assert logged == {"processed": 12, "duplicate": 3, "stale": 1, "ignored": 1, "invalid_event": 2}
    # Each scrape, whichever worker answered it, sums every worker's counts: the request log's,
    # and the refused requests that the log does not keep.
    for code, text in scrapes:
        assert code == 200
        assert counted_by_outcome(text) == logged + Counter(not_authenticated=4)
        assert hostile not in text
    counting = {path.name for path in directory.glob("counter_*.db")}
    assert counting == {f"counter_{pid}.db" for pid in posting_workers(example.log_path)}
    assert len(counting) == 3  # and none left by an earlier run (emptied at start)
    processing = parse(scrapes[0][1])
    assert (
        processing[("morph_webhooks_processing_seconds_count", labels(model="crmOpportunity", mode="sync"))]
        == 16
    )

    # One worker fewer: gunicorn's child_exit hook runs, and what it counted stays in the sums.
    os.kill(example.master.pid, signal.SIGTTOU)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "Worker exiting" not in example.log_path.read_text():
        time.sleep(0.1)
    assert "Worker exiting" in example.log_path.read_text()
    for _ in range(4):
        code, text = scrape_site(site)
        assert code == 200 and counted_by_outcome(text) == logged + Counter(not_authenticated=4)


def test_the_example_gunicorn_child_exit_marks_the_process_dead(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()  # a worker process that has exited
    live, counted = tmp_path / f"gauge_livesum_{ended.pid}.db", tmp_path / f"counter_{ended.pid}.db"
    live.write_bytes(b"")
    counted.write_bytes(b"")
    config = runpy.run_path(str(ROOT / "example_project" / "gunicorn.conf.py"))

    config["child_exit"](None, SimpleNamespace(pid=ended.pid))

    # The live gauge goes with the process; the counts stay in the sums.
    assert not live.exists() and counted.exists()
    config["on_starting"](None)
    assert list(tmp_path.iterdir()) == []


def test_the_example_gunicorn_start_keeps_the_files_of_running_task_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    # A task worker still running (this process) and a process of an earlier run.
    running, gone = tmp_path / f"histogram_{os.getpid()}.db", tmp_path / f"counter_{ended.pid}.db"
    running.write_bytes(b"")
    gone.write_bytes(b"")

    runpy.run_path(str(ROOT / "example_project" / "gunicorn.conf.py"))["on_starting"](None)

    assert list(tmp_path.iterdir()) == [running]


def test_a_task_workers_processing_times_reach_the_scrape(tmp_path):
    with gunicorn_example(tmp_path, MORPH_WEBHOOKS_PROCESSING="deferred") as example:
        sent = [
            send(example.url, opportunity_event(remote_id=f"opp_{number}"), f"key_{number}")
            for number in range(5)
        ]
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "db_worker", "--interval", "0.1", "--no-startup-delay"],
            cwd=ROOT,
            env=example.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deferred = (
            "morph_webhooks_processing_seconds_count",
            labels(model="crmOpportunity", mode="deferred"),
        )
        try:
            # The worker times an event after its transaction commits: the request log can show
            # the last event processed a moment before its time is written for the scrape.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                samples = parse(scrape_site(example.url)[1])
                if request_log(example.db_path) == {"processed": 5} and samples.get(deferred) == 5:
                    break
                time.sleep(0.2)
        finally:
            stop(worker)
        samples = parse(scrape_site(example.url)[1])

    assert sent == [200] * 5
    assert request_log(example.db_path) == {"processed": 5}
    assert samples[deferred] == 5
    assert (
        "morph_webhooks_processing_seconds_count",
        labels(model="crmOpportunity", mode="sync"),
    ) not in samples
    queued = {
        dict(label_set)["outcome"]: value
        for (name, label_set), value in samples.items()
        if name == "morph_webhooks_deliveries_total"
    }
    assert queued == {"queued": 5}
    assert samples[("morph_webhooks_queued", labels())] == 0
