"""The health check: every threshold crossed from just below to just above, the view and the command."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any
from unittest import mock

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import OperationalError, connection
from django.urls import reverse
from django.utils import timezone

from morph_webhooks import health
from morph_webhooks.conf import conf
from morph_webhooks.health import Status, run_checks
from morph_webhooks.models import Connection, Outcome, SyncOutcome, WebhookDelivery
from morph_webhooks.testing.factories import WebhookDeliveryFactory
from tests.helpers import SECRET

pytestmark = pytest.mark.django_db

MARGIN = 30  # seconds either side of a threshold: far more than a test takes


@pytest.fixture
def thresholds(settings: Any) -> Any:
    """Set some of the app's settings, keeping the test settings' secret."""

    def set_thresholds(**values: Any) -> None:
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, **values}

    return set_thresholds


def delivery(seconds_ago: float = 0, **fields: Any) -> WebhookDelivery:
    """A delivery received ``seconds_ago``: received_at is set on insert, so it is moved after."""
    made = WebhookDeliveryFactory(**fields)
    received_at = timezone.now() - timedelta(seconds=seconds_ago)
    WebhookDelivery.objects.filter(pk=made.pk).update(received_at=received_at)
    return made


def ago(seconds: float) -> Any:
    return timezone.now() - timedelta(seconds=seconds)


def status_of(check: Any) -> Status:
    return check().status  # type: ignore[no-any-return]


class TestDeadDeliveries:
    def test_none_is_ok(self):
        delivery(status=Outcome.PROCESSED)
        assert status_of(health.dead_deliveries) == Status.OK

    def test_below_the_critical_count_is_a_warning_from_it_critical(self, thresholds):
        thresholds(HEALTH_DEAD_CRITICAL=3)
        for _ in range(2):
            delivery(status=Outcome.DEAD, http_status=200)
        result = health.dead_deliveries()
        assert result.status == Status.WARNING and result.detail.startswith("2 dead deliveries")

        delivery(status=Outcome.DEAD, http_status=200)
        assert status_of(health.dead_deliveries) == Status.CRITICAL


class TestOverdueDeliveries:
    def test_queued_within_the_threshold_is_ok_past_it_critical(self, thresholds):
        thresholds(HEALTH_OVERDUE_SECONDS=300)
        delivery(status=Outcome.QUEUED, next_attempt_at=ago(300 - MARGIN))
        assert status_of(health.overdue_deliveries) == Status.OK

        delivery(status=Outcome.QUEUED, next_attempt_at=ago(300 + MARGIN))
        result = health.overdue_deliveries()
        assert result.status == Status.CRITICAL
        assert result.detail.startswith("1 queued delivery overdue") and "workers" in result.detail

    def test_only_queued_deliveries_count(self, thresholds):
        thresholds(HEALTH_OVERDUE_SECONDS=300)
        delivery(status=Outcome.DEAD, next_attempt_at=ago(3600))
        delivery(status=Outcome.PROCESSED, next_attempt_at=ago(3600))
        assert status_of(health.overdue_deliveries) == Status.OK


class TestFailureRate:
    def test_no_traffic_is_ok(self):
        assert health.failure_rate().detail == "No deliveries in the last hour."

    def test_at_the_rate_is_ok_above_it_a_warning(self, thresholds):
        thresholds(HEALTH_FAILURE_RATE=0.25)
        delivery(status=Outcome.FAILED, http_status=500)
        for _ in range(3):
            delivery(status=Outcome.PROCESSED)
        assert status_of(health.failure_rate) == Status.OK  # 1 of 4: 25%, not above

        delivery(status=Outcome.DEAD, http_status=200)
        delivery(status=Outcome.PROCESSED)
        delivery(status=Outcome.PROCESSED)
        result = health.failure_rate()  # 2 of 7: 28.6%
        assert result.status == Status.WARNING
        assert result.detail == "2 of 7 deliveries in the last hour failed (28.6%)."

    def test_only_the_last_hour_counts(self, thresholds):
        thresholds(HEALTH_FAILURE_RATE=0.25)
        delivery(3600 + MARGIN, status=Outcome.FAILED, http_status=500)
        delivery(3600 - MARGIN, status=Outcome.PROCESSED)
        assert health.failure_rate().detail == "0 of 1 deliveries in the last hour failed (0.0%)."


class TestSilentConnections:
    @pytest.fixture(autouse=True)
    def connection(self, thresholds):
        thresholds(SILENCE_THRESHOLD=3600)
        Connection.register("hubspot", "tenant_1")

    def test_heard_within_the_threshold_is_ok_past_it_a_warning(self):
        delivery(3600 - MARGIN)
        assert status_of(health.silent_connections) == Status.OK

        WebhookDelivery.objects.update(received_at=ago(3600 + MARGIN))
        result = health.silent_connections()
        assert result.status == Status.WARNING
        assert result.detail.startswith("1 connection silent: hubspot / tenant_1 (since ")

    def test_the_newest_event_counts(self):
        delivery(3600 * 24)
        delivery(3600 - MARGIN)
        assert status_of(health.silent_connections) == Status.OK

    def test_only_its_own_events_count(self):
        delivery(3600 + MARGIN)
        delivery(0, owner_id="tenant_2")
        delivery(0, connector_id="salesforce")
        assert status_of(health.silent_connections) == Status.WARNING

    def test_a_connection_never_heard_from_is_not_silent(self):
        Connection.register("salesforce", "tenant_9")
        assert health.silent_connections().detail == "No connection silent (0 heard from)."

    def test_an_override_moves_one_connections_threshold(self, thresholds):
        Connection.register("hubspot", "tenant_2")
        delivery(7200 - MARGIN)
        delivery(3600 + MARGIN, owner_id="tenant_2")
        thresholds(SILENCE_OVERRIDES={"hubspot/tenant_1": 7200})
        result = health.silent_connections()
        assert result.status == Status.WARNING and "tenant_1" not in result.detail

        WebhookDelivery.objects.filter(owner_id="tenant_1").update(received_at=ago(7200 + MARGIN))
        assert "tenant_1" in health.silent_connections().detail

    def test_zero_turns_the_check_off(self, thresholds):
        delivery(3600 * 24 * 30)
        thresholds(SILENCE_OVERRIDES={"hubspot/tenant_1": 0})
        assert status_of(health.silent_connections) == Status.OK
        thresholds(SILENCE_OVERRIDES={}, SILENCE_THRESHOLD=0)
        assert status_of(health.silent_connections) == Status.OK

    @pytest.mark.parametrize(
        "overrides", [["hubspot/tenant_1"], {"hubspot": 60}, {"hubspot/tenant_1": -1}, {"a/b": "60"}]
    )
    def test_malformed_overrides_are_refused(self, thresholds, overrides):
        thresholds(SILENCE_OVERRIDES=overrides)
        with pytest.raises(ImproperlyConfigured, match="SILENCE_OVERRIDES"):
            _ = conf.SILENCE_OVERRIDES


def synced(seconds_ago: float, outcome: SyncOutcome = SyncOutcome.SUCCEEDED, owner: str = "tenant_1") -> None:
    Connection.objects.create(
        connector_id="hubspot",
        owner_id=owner,
        last_sync_started_at=ago(seconds_ago + 60),
        last_sync_finished_at=ago(seconds_ago),
        last_sync_outcome=outcome,
    )


class TestConnectionSyncs:
    def test_never_synced_is_ok(self, thresholds):
        thresholds(SYNC_MAX_AGE=60)
        Connection.register("hubspot", "tenant_1")
        assert health.connection_syncs().detail == "0 synced connections in order."

    def test_a_failed_last_sync_is_a_warning(self):
        synced(0, SyncOutcome.FAILED)
        synced(0, owner="tenant_2")
        result = health.connection_syncs()
        assert result.status == Status.WARNING
        assert result.detail == "last sync failed: hubspot / tenant_1."

    def test_older_than_the_maximum_age_is_a_warning(self, thresholds):
        thresholds(SYNC_MAX_AGE=3600)
        synced(3600 - MARGIN)
        assert status_of(health.connection_syncs) == Status.OK

        Connection.objects.update(last_sync_finished_at=ago(3600 + MARGIN))
        result = health.connection_syncs()
        assert result.status == Status.WARNING
        assert result.detail == "last sync older than 3600 s: hubspot / tenant_1."

    def test_a_sync_that_never_finished_counts_from_its_start(self, thresholds):
        thresholds(SYNC_MAX_AGE=3600)
        synced(0)
        Connection.objects.update(last_sync_started_at=ago(3600 + MARGIN), last_sync_finished_at=None)
        assert status_of(health.connection_syncs) == Status.WARNING

    def test_without_a_maximum_age_old_syncs_are_ok(self):
        synced(3600 * 24 * 365)
        assert status_of(health.connection_syncs) == Status.OK


class TestReport:
    def test_all_ok_with_one_statement_per_check(self, django_assert_num_queries):
        Connection.register("hubspot", "tenant_1")
        delivery()
        with django_assert_num_queries(len(health.CHECKS)):
            report = run_checks()
        assert report.status == Status.OK
        assert [check["name"] for check in report.as_json()["checks"]] == [  # type: ignore[index]
            check.__name__ for check in health.CHECKS
        ]

    def test_the_worst_check_decides(self, thresholds):
        thresholds(HEALTH_DEAD_CRITICAL=5)
        delivery(status=Outcome.DEAD, http_status=200)
        assert run_checks().status == Status.WARNING
        delivery(status=Outcome.QUEUED, next_attempt_at=ago(3600))
        assert run_checks().status == Status.CRITICAL

    def test_an_unreachable_database_is_critical_and_ends_the_report(self):
        with mock.patch(
            "django.db.backends.utils.CursorWrapper.execute", side_effect=OperationalError("down")
        ):
            report = run_checks()
        assert report.status == Status.CRITICAL
        assert report.as_json()["checks"] == [
            {"name": "database", "status": "critical", "detail": "Unreachable: OperationalError: down"}
        ]


HEALTH_URL = "/webhooks/morph/health/"


class TestHealthView:
    def test_url_name(self):
        assert reverse("morph_webhooks:health") == HEALTH_URL

    def test_without_credentials_is_401(self, client):
        response = client.get(HEALTH_URL)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")

    def test_a_wrong_token_is_401(self, client):
        assert client.get(HEALTH_URL, {"token": "wrong"}).status_code == 401

    def test_ok_with_a_token_or_bearer(self, client):
        response = client.get(HEALTH_URL, {"token": SECRET})
        assert response.status_code == 200
        assert response["Cache-Control"] == "no-store"
        data = response.json()
        assert data["status"] == "ok"
        assert {"name": "database", "status": "ok", "detail": "Reachable."} in data["checks"]
        assert all(set(check) == {"name", "status", "detail"} for check in data["checks"])

        bearer = client.get(HEALTH_URL, headers={"Authorization": f"Bearer {SECRET}"})
        assert bearer.status_code == 200

    def test_a_warning_is_200(self, client):
        delivery(status=Outcome.DEAD, http_status=200)
        response = client.get(HEALTH_URL, {"token": SECRET})
        assert response.status_code == 200 and response.json()["status"] == "warning"

    def test_critical_is_503(self, client):
        delivery(status=Outcome.QUEUED, next_attempt_at=ago(3600))
        response = client.get(HEALTH_URL, {"token": SECRET})
        assert response.status_code == 503 and response.json()["status"] == "critical"

    def test_works_behind_login_required_middleware(self, client, settings):
        settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.contrib.auth.middleware.LoginRequiredMiddleware"]
        assert client.get(HEALTH_URL, {"token": SECRET}).status_code == 200

    @pytest.mark.django_db(transaction=True)
    def test_under_atomic_requests_a_failing_check_leaves_the_others_running(self, client, monkeypatch):
        monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)

        def dead_deliveries() -> Any:
            # A statement the database refuses: inside a transaction, PostgreSQL would refuse
            # every later one too.
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM morph_webhooks_no_such_table")

        monkeypatch.setattr(health, "CHECKS", [health.database, dead_deliveries, *health.CHECKS[2:]])
        response = client.get(HEALTH_URL, {"token": SECRET})
        statuses = {check["name"]: check["status"] for check in response.json()["checks"]}
        assert response.status_code == 503
        assert statuses == {
            "database": "ok",
            "dead_deliveries": "critical",
            "overdue_deliveries": "ok",
            "failure_rate": "ok",
            "silent_connections": "ok",
            "connection_syncs": "ok",
        }

    def test_post_is_not_allowed(self, client):
        assert client.post(f"{HEALTH_URL}?token={SECRET}").status_code == 405


def run_health(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("morph_webhooks_health", *args, stdout=out, no_color=True)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()  # type: ignore[arg-type]
    return 0, out.getvalue()


class TestHealthCommand:
    def test_ok_exits_0_with_a_table(self):
        code, output = run_health()
        assert code == 0
        assert "database            ok        Reachable." in output
        assert output.rstrip().endswith("Overall: ok")

    def test_warning_exits_1(self):
        delivery(status=Outcome.DEAD, http_status=200)
        code, output = run_health()
        assert code == 1 and "dead_deliveries     warning   1 dead delivery" in output

    def test_critical_exits_2_and_json_is_the_views(self, client):
        delivery(status=Outcome.QUEUED, next_attempt_at=ago(3600))
        code, output = run_health("--json")
        assert code == 2
        assert json.loads(output) == client.get(HEALTH_URL, {"token": SECRET}).json()
