"""Deferred mode with QUEUE = "deliveries": the endpoint queues no task, morph_webhooks_worker
claims the due deliveries and applies them. In process here; real worker processes on PostgreSQL
in test_workers.py."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing import opportunity_event
from morph_webhooks.worker import Worker, claim, release
from tests.helpers import SECRET, locked_elsewhere, postgresql_only, raising_receiver

pytestmark = pytest.mark.django_db

LEASE = 600.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def deliveries_queue(settings):
    settings.MORPH_WEBHOOKS = {
        **settings.MORPH_WEBHOOKS,
        "PROCESSING": "deferred",
        "QUEUE": "deliveries",
        "MAX_ATTEMPTS": 2,
        "RETRY_DELAY": 10,
        "PENDING_TIMEOUT": LEASE,
    }
    # A task backend that would run a task in the request: none must be enqueued.
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def queue(send, count: int) -> list[WebhookDelivery]:
    for index in range(count):
        event = opportunity_event(remote_id=f"deal_{index}", fields={"name": f"Deal {index}"})
        assert send(event, key=f"k{index}").json() == {"status": "queued"}
    return list(WebhookDelivery.objects.order_by("pk"))


def test_the_endpoint_queues_the_delivery_and_the_worker_applies_it(send, sent_signals):
    (delivery,) = queue(send, 1)
    assert (delivery.status, delivery.attempts) == ("queued", 0)
    assert IdempotencyKey.objects.get().outcome == "queued"
    assert not DBTaskResult.objects.exists()
    assert not Opportunity.objects.exists()

    assert Worker(until_empty=True).run() == 1

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("processed", 1, None)
    assert IdempotencyKey.objects.get().outcome == "processed"
    assert Opportunity.objects.get().name == "Deal 0"
    assert sent_signals.names == ["created"]
    # Nothing is due any more: another run applies nothing.
    assert Worker(until_empty=True).run() == 0


def test_a_duplicate_is_answered_at_once_and_queues_nothing(send):
    queue(send, 1)
    event = opportunity_event(remote_id="deal_0", fields={"name": "Deal 0"})
    assert send(event, key="k0").json() == {"status": "duplicate"}
    assert Worker(until_empty=True).run() == 1
    assert list(WebhookDelivery.objects.order_by("pk").values_list("status", flat=True)) == [
        "processed",
        "duplicate",
    ]


def test_a_claim_leases_the_longest_waiting_due_deliveries(send):
    deliveries = queue(send, 4)
    now = timezone.now()
    # The third is not due yet (a retry's backoff); the fourth has waited longest.
    WebhookDelivery.objects.filter(pk=deliveries[2].pk).update(next_attempt_at=now + timedelta(minutes=5))
    WebhookDelivery.objects.filter(pk=deliveries[3].pk).update(next_attempt_at=now - timedelta(minutes=5))

    claimed = claim(2)

    assert [d.pk for d in claimed] == [deliveries[3].pk, deliveries[0].pk]
    leased = WebhookDelivery.objects.filter(pk__in=[d.pk for d in claimed])
    for delivery in leased:
        # Leased for PENDING_TIMEOUT: no other claim takes them meanwhile.
        assert delivery.next_attempt_at - now == pytest.approx(
            timedelta(seconds=LEASE), abs=timedelta(seconds=5)
        )
        assert delivery.status == "queued"
    assert [d.next_attempt_at for d in claimed] == [
        d.next_attempt_at for d in leased.order_by("next_attempt_at")
    ]
    assert [d.pk for d in claim(10)] == [deliveries[1].pk]
    assert claim(10) == []


def test_a_delivery_whose_lease_ran_out_is_claimed_again(send):
    (delivery,) = queue(send, 1)
    assert [d.pk for d in claim(1)] == [delivery.pk]
    assert claim(1) == []
    # Its worker died: once the lease is over, another takes it.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    assert [d.pk for d in claim(1)] == [delivery.pk]


def test_a_failure_is_retried_after_its_backoff_and_the_others_go_on(send, caplog):
    deliveries = queue(send, 3)
    with raising_receiver(opportunity_created, RuntimeError, "CRM mirror down", remote_id="deal_1"):
        assert Worker(until_empty=True).run() == 3
        failed = WebhookDelivery.objects.get(pk=deliveries[1].pk)
        assert (failed.status, failed.attempts) == ("queued", 1)
        assert "CRM mirror down" in failed.error
        assert failed.next_attempt_at > timezone.now() + timedelta(seconds=5)
        assert IdempotencyKey.objects.get(key="k1").outcome == "queued"
        assert f"Delivery {failed.pk} failed" in caplog.text

        # Due again: the second attempt is the last (MAX_ATTEMPTS 2).
        WebhookDelivery.objects.filter(pk=failed.pk).update(next_attempt_at=timezone.now())
        assert Worker(until_empty=True).run() == 1
        failed.refresh_from_db()
        assert (failed.status, failed.attempts) == ("dead", 2)
    statuses = WebhookDelivery.objects.order_by("pk").values_list("status", flat=True)
    assert list(statuses) == ["processed", "dead", "processed"]
    assert sorted(Opportunity.objects.values_list("remote_id", flat=True)) == ["deal_0", "deal_2"]


def test_stopping_gives_back_the_rest_of_the_claim(send):
    deliveries = queue(send, 3)
    worker = Worker(claim_size=3, until_empty=True)
    # Stopped while the first delivery is applied (a SIGTERM, say).
    opportunity_created.connect(lambda **kwargs: worker.stop(), weak=False, dispatch_uid="test-stop")
    try:
        assert worker.run() == 1
    finally:
        opportunity_created.disconnect(dispatch_uid="test-stop")
    rows = list(WebhookDelivery.objects.order_by("pk"))
    assert [row.status for row in rows] == ["processed", "queued", "queued"]
    # Due now, not PENDING_TIMEOUT later.
    assert all(row.next_attempt_at <= timezone.now() for row in rows[1:])
    assert [d.pk for d in claim(10)] == [d.pk for d in deliveries[1:]]


def test_release_leaves_a_delivery_that_was_taken_meanwhile(send):
    (delivery,) = queue(send, 1)
    (claimed,) = claim(1)
    # Settled by another run since (a replay from the admin, say).
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="processed", next_attempt_at=None)
    assert release([claimed]) == 0
    assert WebhookDelivery.objects.get().next_attempt_at is None


def test_the_command_applies_a_backlog(send):
    queue(send, 3)
    out = call_command_output("--batch", "--claim", "2")
    assert out == "Applied 3 deliveries.\n"
    assert Opportunity.objects.count() == 3


def test_the_command_counts_failures_apart(send):
    queue(send, 2)
    with raising_receiver(opportunity_created, RuntimeError, "CRM mirror down", remote_id="deal_1"):
        out = call_command_output("--batch")
    assert out == "Applied 1 delivery; 1 failed (recorded, and retried or dead).\n"


def test_the_command_refuses_to_run_for_another_queue(settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "QUEUE": "tasks"}
    with pytest.raises(CommandError, match="QUEUE is 'tasks'"):
        call_command("morph_webhooks_worker", "--batch")
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "QUEUE": "deliveries", "PROCESSING": "sync"}
    with pytest.raises(CommandError, match="PROCESSING is 'sync'"):
        call_command("morph_webhooks_worker", "--batch")


@pytest.mark.parametrize("option", [["--claim", "0"], ["--interval", "0"]])
def test_the_command_refuses_nonsense_options(option):
    with pytest.raises(CommandError, match=option[0].strip("-")):
        call_command("morph_webhooks_worker", "--batch", *option)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_claims_skip_what_another_worker_is_claiming(send):
    deliveries = queue(send, 4)
    # Another worker's claim, caught between its SELECT ... FOR UPDATE and its commit.
    table = WebhookDelivery._meta.db_table
    with locked_elsewhere(
        f"SELECT 1 FROM {table} WHERE id IN (%s, %s) FOR UPDATE", [d.pk for d in deliveries[:2]]
    ):
        # Not blocked by the other claim, and none of its rows.
        assert [d.pk for d in claim(10)] == [d.pk for d in deliveries[2:]]


def call_command_output(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("morph_webhooks_worker", *args, stdout=out)
    return out.getvalue()


# A project with no tasks framework at all: neither django.tasks nor the backport can be imported.
WITHOUT_TASKS = """
import sys
sys.modules["django.tasks"] = sys.modules["django_tasks"] = None  # any import of them fails

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="not-a-secret",
    USE_TZ=True,
    ALLOWED_HOSTS=["*"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sys.argv[1]}},
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "rest_framework", "morph_webhooks"],
    ROOT_URLCONF=__name__,  # urlpatterns below
    MORPH_WEBHOOKS={
        "SECRETS": [SECRET],
        "PROCESSING": "deferred",
        "QUEUE": "deliveries",
        "API_KEY": "mk_test",
        "API_SECRET": "not-a-real-api-secret-0123456789",
    },
)
django.setup()
from django.urls import include, path

urlpatterns = [path("webhooks/morph/", include("morph_webhooks.urls"))]

from django.core.management import CommandError, call_command
from django.test import Client
from morph_webhooks.models import Opportunity
from morph_webhooks.testing import morph_headers, opportunity_event, post_event

call_command("migrate", verbosity=0)
call_command("check", fail_level="WARNING")
response = post_event(Client(), opportunity_event(fields={"name": "Deal"}), headers=morph_headers("k1"))
print(response.json()["status"], Opportunity.objects.count())
call_command("morph_webhooks_worker", "--batch")
print(Opportunity.objects.get().name)
try:  # a sync queued for a task worker does need the framework
    call_command("morph_webhooks_sync", "--all", "--enqueue")
except CommandError as exc:
    print(exc)
"""


def test_the_deliveries_queue_needs_no_tasks_framework(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", f"SECRET = {SECRET!r}\n{WITHOUT_TASKS}", str(tmp_path / "db.sqlite3")],
        cwd=ROOT,
        env={name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "System check identified no issues (0 silenced).",
        "queued 0",
        "Applied 1 delivery.",
        "Deal",
        "Django's task framework is not available (Django 5.2's task framework needs django-tasks: "
        "pip install '/path/to/morph-webhooks[tasks]'). "
        "Configure a task backend with workers (TASKS, MORPH_WEBHOOKS['TASK_BACKEND']), or sync here "
        "without --enqueue: python manage.py morph_webhooks_sync --all",
    ]
