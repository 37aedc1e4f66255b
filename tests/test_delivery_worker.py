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
from morph_webhooks.signals import delivery_failed, opportunity_created
from morph_webhooks.testing import opportunity_event
from morph_webhooks.worker import Worker, claim
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


def claimed_pks() -> list[int]:
    """Claim every due delivery, one after the other: their primary keys in the order claimed."""
    pks = []
    while (delivery := claim()) is not None:
        pks.append(delivery.pk)
    return pks


def test_a_claim_leases_the_longest_waiting_due_delivery_and_counts_its_attempt(send):
    deliveries = queue(send, 4)
    now = timezone.now()
    # The third is not due yet (a retry's backoff); the fourth has waited longest.
    WebhookDelivery.objects.filter(pk=deliveries[2].pk).update(next_attempt_at=now + timedelta(minutes=5))
    WebhookDelivery.objects.filter(pk=deliveries[3].pk).update(next_attempt_at=now - timedelta(minutes=5))

    claimed = claim()

    assert claimed is not None and claimed.pk == deliveries[3].pk
    stored = WebhookDelivery.objects.get(pk=claimed.pk)
    # Leased for PENDING_TIMEOUT: no other claim takes it meanwhile; its attempt is counted before
    # it is applied, so that one its worker dies in counts too.
    assert stored.next_attempt_at - now == pytest.approx(timedelta(seconds=LEASE), abs=timedelta(seconds=5))
    assert (stored.status, stored.attempts) == ("queued", 1)
    assert (claimed.next_attempt_at, claimed.attempts) == (stored.next_attempt_at, 1)
    # The others are not held by this claim: the next claims take them.
    assert claimed_pks() == [deliveries[0].pk, deliveries[1].pk]
    assert claim() is None


def test_a_delivery_whose_lease_ran_out_is_claimed_again(send):
    (delivery,) = queue(send, 1)
    assert claimed_pks() == [delivery.pk]
    # Its worker died: once the lease is over, another takes it, as its second attempt.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    again = claim()
    assert again is not None and (again.pk, again.attempts) == (delivery.pk, 2)


def test_a_delivery_its_workers_died_in_max_attempts_times_ends_dead(send, caplog):
    (delivery,) = queue(send, 1)
    failures = []
    delivery_failed.connect(
        lambda delivery, exception, **kwargs: failures.append((delivery.pk, str(exception))),
        weak=False,
        dispatch_uid="test-failed",
    )
    try:
        # As workers killed applying it leave it (MAX_ATTEMPTS is 2): its attempts counted, due again.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=2)
        assert Worker(until_empty=True).run() == 1
    finally:
        delivery_failed.disconnect(dispatch_uid="test-failed")

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("dead", 2, None)
    assert "WorkerDied: Gave up after 2 attempts (MAX_ATTEMPTS)" in delivery.error
    ((failed_pk, message),) = failures
    assert failed_pk == delivery.pk and message.startswith("Gave up after 2 attempts (MAX_ATTEMPTS)")
    assert not Opportunity.objects.exists()
    # Its key stays held for it, as for any dead delivery: a reprocess applies it.
    assert IdempotencyKey.objects.get().outcome == "queued"
    assert f"Delivery {delivery.pk} failed" in caplog.text


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


def test_stopping_finishes_the_delivery_in_hand_and_leaves_the_rest_due(send):
    deliveries = queue(send, 3)
    worker = Worker(until_empty=True)
    # Stopped while the first delivery is applied (a SIGTERM, say).
    opportunity_created.connect(lambda **kwargs: worker.stop(), weak=False, dispatch_uid="test-stop")
    try:
        assert worker.run() == 1
    finally:
        opportunity_created.disconnect(dispatch_uid="test-stop")
    rows = list(WebhookDelivery.objects.order_by("pk"))
    assert [(row.status, row.attempts) for row in rows] == [("processed", 1), ("queued", 0), ("queued", 0)]
    # Never claimed: due now, not PENDING_TIMEOUT later.
    assert all(row.next_attempt_at <= timezone.now() for row in rows[1:])
    assert claimed_pks() == [d.pk for d in deliveries[1:]]


def test_the_command_applies_a_backlog(send):
    queue(send, 3)
    out = call_command_output("--batch")
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


@pytest.mark.parametrize("option", [["--interval", "0"], ["--interval", "nan"]])
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
        assert claimed_pks() == [d.pk for d in deliveries[2:]]


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
