from __future__ import annotations

import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command, load_command_class
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from morph_webhooks.models import IdempotencyKey, Opportunity, SignedMessage, WebhookDelivery
from morph_webhooks.testing.factories import IdempotencyKeyFactory, WebhookDeliveryFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def age(model, pks, days: float, field: str) -> None:
    model.objects.filter(pk__in=pks).update(**{field: timezone.now() - timedelta(days=days)})


class TestReprocess:
    def test_by_status_in_arrival_order_with_progress(self):
        failed = [WebhookDeliveryFactory(status="failed") for _ in range(3)]
        WebhookDeliveryFactory(status="rejected")

        output = run("morph_webhooks_reprocess", "--status", "failed", "--progress-every", "2")

        assert "2/3" in output and "3/3 3 processed" in output
        assert {d.status for d in WebhookDelivery.objects.filter(pk__in=[d.pk for d in failed])} == {
            "processed"
        }
        assert WebhookDelivery.objects.filter(status="rejected").count() == 1

    def test_by_id_and_time_range(self):
        # Two deliveries of one event: Morph retried it after the first failed.
        old, recent = (
            WebhookDeliveryFactory(status="failed", idempotency_key="same", remote_id="opp_x")
            for _ in range(2)
        )
        age(WebhookDelivery, [old.pk], 2, "received_at")

        run("morph_webhooks_reprocess", "--since", (timezone.now() - timedelta(days=1)).isoformat())

        old.refresh_from_db(), recent.refresh_from_db()
        assert (old.status, recent.status) == ("failed", "processed")
        run("morph_webhooks_reprocess", str(old.pk))
        old.refresh_from_db()
        assert old.status == "duplicate"  # same key and event as `recent`, already applied

    def test_settled_deliveries_are_reported_already_applied_and_keep_their_outcome(self):
        delivery = WebhookDeliveryFactory(status="failed")
        run("morph_webhooks_reprocess", str(delivery.pk))
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("processed", 2)

        output = run("morph_webhooks_reprocess", "--status", "processed")

        assert "1/1 1 already applied" in output
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.http_status) == ("processed", 2, 200)
        assert IdempotencyKey.objects.get().deliveries == 1

    def test_dry_run_changes_nothing(self):
        delivery = WebhookDeliveryFactory(status="failed")

        output = run("morph_webhooks_reprocess", "--status", "failed", "--dry-run")

        assert f"{delivery.pk} " in output and "Would reprocess 1 deliveries." in output
        assert WebhookDelivery.objects.get().status == "failed"
        assert Opportunity.objects.count() == 0

    def test_needs_a_selection(self):
        with pytest.raises(CommandError, match="Name the deliveries"):
            run("morph_webhooks_reprocess")


class TestPrune:
    def test_deletes_old_rows_in_batches_and_keeps_pending_ones(self):
        old_keys = [IdempotencyKeyFactory(key=f"old{i}") for i in range(5)]
        queued_key = IdempotencyKeyFactory(key="queued", outcome="queued")
        recent_key = IdempotencyKeyFactory(key="recent")
        age(IdempotencyKey, [k.pk for k in [*old_keys, queued_key]], 40, "first_seen_at")
        old_deliveries = [WebhookDeliveryFactory() for _ in range(3)]
        queued_delivery = WebhookDeliveryFactory(status="queued")
        recent_delivery = WebhookDeliveryFactory()
        age(WebhookDelivery, [d.pk for d in [*old_deliveries, queued_delivery]], 40, "received_at")

        with CaptureQueriesContext(connection) as queries:
            output = run("morph_webhooks_prune", "--batch-size", "2")

        deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
        assert len(deletes) == 3 + 2  # ceil(5 / 2) batches of keys, ceil(3 / 2) of deliveries
        assert "Deleted 5 idempotency keys." in output and "Deleted 3 deliveries." in output
        assert set(IdempotencyKey.objects.values_list("key", flat=True)) == {queued_key.key, recent_key.key}
        assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {
            queued_delivery.pk,
            recent_delivery.pk,
        }

    def test_a_delivery_queued_between_read_and_delete_is_kept(self):
        old = WebhookDeliveryFactory(status="rejected", http_status=400)
        age(WebhookDelivery, [old.pk], 40, "received_at")
        requeued = []

        def reprocess_meanwhile(execute, sql, params, many, context):
            # Right before the first DELETE runs, the delivery it was read for is queued again
            # (as reprocessing it in deferred mode would), on the same database.
            if sql.startswith("DELETE") and "webhookdelivery" in sql and not requeued:
                requeued.append(old.pk)
                WebhookDelivery.objects.filter(pk=old.pk).update(status="queued", http_status=200)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(reprocess_meanwhile):
            output = run("morph_webhooks_prune")

        assert requeued == [old.pk]
        assert "Deleted 0 deliveries." in output
        assert WebhookDelivery.objects.get().status == "queued"

    def test_retention_is_configurable_and_dry_run_deletes_nothing(self, settings):
        key = IdempotencyKeyFactory()
        age(IdempotencyKey, [key.pk], 10, "first_seen_at")

        assert "Would delete 1 idempotency keys." in run(
            "morph_webhooks_prune", "--keys-days", "8", "--dry-run"
        )
        assert IdempotencyKey.objects.count() == 1
        assert "Deleted 0 idempotency keys." in run("morph_webhooks_prune")  # default: 30 days
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "KEY_RETENTION_DAYS": 9}
        assert "Deleted 1 idempotency keys." in run("morph_webhooks_prune")

    def test_deletes_signed_messages_outside_the_tolerance_window(self, settings):
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "SIGNATURE_TOLERANCE": 300}
        now = int(time.time())
        for message_id, signed_at in (("expired", now - 301), ("recent", now - 299), ("ahead", now + 299)):
            assert SignedMessage.consume(message_id, str(signed_at))

        assert "Would delete 1 signed messages." in run("morph_webhooks_prune", "--dry-run")
        assert "Deleted 1 signed messages." in run("morph_webhooks_prune")
        assert SignedMessage.objects.count() == 2
        assert not SignedMessage.consume("recent", str(now - 299))  # still single-use

    def test_refuses_to_forget_keys_morph_may_still_retry(self):
        with pytest.raises(CommandError, match="at least 7 days"):
            run("morph_webhooks_prune", "--keys-days", "3")


def test_sweep_command(settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred"}
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    delivery = WebhookDeliveryFactory(status="queued", next_attempt_at=timezone.now() - timedelta(hours=1))

    assert "Enqueued 1 overdue deliveries again." in run("morph_webhooks_sweep")
    assert "Enqueued 0 overdue deliveries again." in run("morph_webhooks_sweep")
    delivery.refresh_from_db()
    assert delivery.next_attempt_at > timezone.now() - timedelta(minutes=1)


def test_sweep_command_on_the_deliveries_queue(settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
    delivery = WebhookDeliveryFactory(status="queued", next_attempt_at=timezone.now() - timedelta(hours=1))

    due = delivery.next_attempt_at

    assert (
        "1 queued deliveries overdue; none enqueued (QUEUE is 'deliveries'): is morph_webhooks_worker running?"
        in run("morph_webhooks_sweep")
    )
    # Left as it was: still the longest waiting, and still overdue for the health check.
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == due
    assert not DBTaskResult.objects.exists()


@pytest.mark.parametrize(
    ("command", "arguments", "message"),
    [
        (
            "morph_webhooks_prune",
            ["--batch-size", "0"],
            "argument --batch-size: expected a whole number above 0",
        ),
        (
            "morph_webhooks_prune",
            ["--batch-size", "-1"],
            "argument --batch-size: expected a whole number above 0",
        ),
        ("morph_webhooks_prune", ["--batch-size", "1.5"], "argument --batch-size: expected a whole number"),
        (
            "morph_webhooks_prune",
            ["--keys-days", "-30"],
            "argument --keys-days: expected a whole number above 0",
        ),
        ("morph_webhooks_prune", ["--deliveries-days", "0"], "argument --deliveries-days: expected a whole"),
        ("morph_webhooks_reprocess", ["--status", "failed", "--progress-every", "0"], "--progress-every"),
        ("morph_webhooks_reprocess", ["-3"], "argument ids: expected a whole number above 0"),
        ("morph_webhooks_sweep", ["--older-than", "-1"], "argument --older-than: expected 0 or a positive"),
        ("morph_webhooks_sweep", ["--older-than", "nan"], "argument --older-than: expected a finite number"),
        ("morph_webhooks_check", ["http://localhost", "--timeout", "inf"], "argument --timeout: expected a"),
    ],
)
def test_numeric_options_are_validated(command, arguments, message):
    with pytest.raises(CommandError, match=message):
        run(command, *arguments)
    assert not WebhookDelivery.objects.exists()


def test_prune_with_a_batch_size_deletes_what_a_dry_run_counts():
    WebhookDeliveryFactory()
    age(WebhookDelivery, list(WebhookDelivery.objects.values_list("pk", flat=True)), 40, "received_at")

    assert "Would delete 1 deliveries." in run("morph_webhooks_prune", "--dry-run", "--batch-size", "1")
    assert "Deleted 1 deliveries." in run("morph_webhooks_prune", "--batch-size", "1")


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        ("morph_webhooks_prune", ["(default: 1000)", "KEY_RETENTION_DAYS", "DELIVERY_RETENTION_DAYS"]),
        ("morph_webhooks_reprocess", ["(default: 100)"]),
        ("morph_webhooks_sweep", ["PENDING_TIMEOUT"]),
        ("morph_webhooks_check", ["(default: 10)", "(default: 30)"]),
    ],
)
def test_help_shows_option_defaults(command, defaults):
    parser = load_command_class("morph_webhooks", command).create_parser("manage.py", command)
    text = " ".join(parser.format_help().split())
    assert all(default in text for default in defaults), text
