"""Deferred mode in process: the endpoint claims, records and enqueues; run_delivery applies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone
from django.utils.module_loading import import_string
from django_tasks_db.models import DBTaskResult

from morph_webhooks import apply
from morph_webhooks.apply import PROCESS_DELIVERY_TASK
from morph_webhooks.deferred import process_delivery, sweep_pending
from morph_webhooks.intake import run_delivery
from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery
from morph_webhooks.reprocess import reprocess_delivery
from morph_webhooks.signals import delivery_failed, opportunity_created
from morph_webhooks.sweeper import sweep
from morph_webhooks.testing import opportunity_event
from tests.helpers import raising_receiver

pytestmark = pytest.mark.django_db

DB_BACKEND = "django_tasks_db.DatabaseBackend"


@pytest.fixture(autouse=True)
def deferred(settings):
    settings.MORPH_WEBHOOKS = {
        **settings.MORPH_WEBHOOKS,
        "PROCESSING": "deferred",
        "MAX_ATTEMPTS": 3,
        "RETRY_DELAY": 10,
    }
    settings.TASKS = {"default": {"BACKEND": DB_BACKEND}}


@pytest.fixture
def dead() -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every delivery_failed sent: one per delivery given up."""
    sent: list[dict[str, Any]] = []
    delivery_failed.connect(lambda **kwargs: sent.append(kwargs), weak=False, dispatch_uid="test-dead")
    yield sent
    delivery_failed.disconnect(dispatch_uid="test-dead")


def task_ids() -> list[int]:
    return [result.args_kwargs["args"][0] for result in DBTaskResult.objects.order_by("enqueued_at")]


def test_endpoint_queues_and_a_worker_run_applies_once(send, sent_signals):
    response = send(opportunity_event(), key="k1")

    assert response.json() == {"status": "queued"}
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("queued", 0)
    assert IdempotencyKey.objects.get().outcome == "queued"
    assert task_ids() == [delivery.pk]
    assert Opportunity.objects.count() == 0 and sent_signals.names == []

    assert run_delivery(delivery.pk) == "processed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("processed", 1, None)
    assert IdempotencyKey.objects.get().outcome == "processed"
    assert Opportunity.objects.get().name == "Acme renewal"
    assert sent_signals.names == ["created"]

    # The same task delivered again finds nothing to do.
    assert run_delivery(delivery.pk) is None
    assert sent_signals.names == ["created"]


def test_tasks_queued_under_their_former_path_still_run():
    # Stored tasks name their function by its path; tasks queued before it moved name this one.
    assert import_string("morph_webhooks.tasks.process_delivery") is process_delivery
    assert import_string("morph_webhooks.tasks.sweep_pending") is sweep_pending


def test_the_delivery_task_is_found_by_the_path_it_is_queued_under():
    assert import_string(PROCESS_DELIVERY_TASK) is process_delivery
    assert process_delivery.module_path == PROCESS_DELIVERY_TASK


def test_duplicate_is_answered_without_a_second_task(send):
    send(opportunity_event(), key="k1")
    again = send(opportunity_event(), key="k1")

    assert again.json() == {"status": "duplicate"}
    assert len(task_ids()) == 1
    assert IdempotencyKey.objects.get().deliveries == 2


def test_ordering_guard_applies_in_workers(send):
    send(opportunity_event("updated", updated_at="2025-03-06T10:00:00Z", fields={"stage": "new"}), key="new")
    send(opportunity_event("updated", updated_at="2025-03-06T09:00:00Z", fields={"stage": "old"}), key="old")

    assert [run_delivery(pk) for pk in task_ids()] == ["processed", "stale"]
    assert Opportunity.objects.get().stage_id == "new"


def test_a_queued_delivery_whose_transaction_deadlocked_is_applied_when_started_over(send, monkeypatch):
    # PostgreSQL may end a deadlock at any statement, the delivery's own write included, once the
    # delivery was settled in memory: the transaction starts over, and must start as it began,
    # from a queued delivery whose key is held for it, not as a new delivery of a claimed key.
    send(opportunity_event(), key="k1")
    (delivery_id,) = task_ids()
    deadlocks = [OperationalError("deadlock detected")]
    deadlocks[0].__cause__ = type("DeadlockDetected", (Exception,), {"sqlstate": "40P01"})()
    written = apply.save_delivery

    def deadlocking_once(delivery: WebhookDelivery) -> None:
        if deadlocks:
            raise deadlocks.pop()
        written(delivery)

    monkeypatch.setattr(apply, "save_delivery", deadlocking_once)

    assert run_delivery(delivery_id) == "processed"
    assert not deadlocks
    assert WebhookDelivery.objects.get().status == "processed"
    assert IdempotencyKey.objects.get().outcome == "processed"
    assert Opportunity.objects.count() == 1


def test_rolled_back_request_leaves_no_task(send):
    def explode(**kwargs):
        raise RuntimeError("after the task row was written")

    signal = process_delivery.get_backend().__class__  # the backend sends task_enqueued
    from django_tasks_db.compat import task_enqueued

    task_enqueued.connect(explode, sender=signal, weak=False, dispatch_uid="explode")
    try:
        response = send(opportunity_event(), key="k1")
    finally:
        task_enqueued.disconnect(sender=signal, dispatch_uid="explode")

    assert response.status_code == 500
    assert DBTaskResult.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0
    assert WebhookDelivery.objects.get().status == "failed"


def test_failures_retry_with_backoff_then_die(send, dead):
    failures = []

    with raising_receiver(opportunity_created, RuntimeError, "CRM is down"):
        send(opportunity_event(), key="k1")
        delivery = WebhookDelivery.objects.get()
        for _ in range(3):
            before = timezone.now()
            with pytest.raises(RuntimeError):
                run_delivery(delivery.pk)
            delivery.refresh_from_db()
            failures.append(
                (
                    delivery.status,
                    delivery.attempts,
                    delivery.next_attempt_at and (delivery.next_attempt_at - before),
                )
            )

    statuses = [(status, attempts) for status, attempts, _ in failures]
    assert statuses == [("queued", 1), ("queued", 2), ("dead", 3)]
    delays = [delay for _, _, delay in failures[:2]]
    assert timedelta(seconds=9) < delays[0] <= timedelta(seconds=11)
    assert timedelta(seconds=19) < delays[1] <= timedelta(seconds=21)
    assert "CRM is down" in delivery.error
    assert len(task_ids()) == 3  # the first, then one per retry, each to run after its backoff
    # The retries wait for their backoff: a worker does not pick them up before.
    assert [
        r.task_result.task.run_after is not None for r in DBTaskResult.objects.order_by("enqueued_at")
    ] == [False, True, True]
    assert len(dead) == 1 and dead[0]["delivery"].pk == delivery.pk
    assert str(dead[0]["exception"]) == "CRM is down"
    assert Opportunity.objects.count() == 0
    assert IdempotencyKey.objects.get().outcome == "queued"  # still waiting for its event

    # Reprocessing a dead delivery queues it again; once the receiver is fixed it is applied.
    assert reprocess_delivery(delivery).outcome == "queued"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("queued", 0)
    assert run_delivery(delivery.pk) == "processed"
    assert Opportunity.objects.count() == 1


def test_sweeper_requeues_overdue_deliveries_once(send):
    send(opportunity_event(), key="k1")
    delivery = WebhookDelivery.objects.get()

    assert sweep() == 0  # not overdue yet
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(hours=1))
    assert sweep() == 1
    assert sweep() == 0  # the first sweep pushed it back
    assert task_ids() == [delivery.pk, delivery.pk]
    # Both tasks run; the event is applied once.
    assert [run_delivery(pk) for pk in task_ids()] == ["processed", None]


def test_sync_mode_processes_a_leftover_queued_delivery(send, settings):
    send(opportunity_event(), key="k1")
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "sync"}

    result = reprocess_delivery(WebhookDelivery.objects.get())

    assert result.outcome == "processed"
    assert IdempotencyKey.objects.get().outcome == "processed"
    assert WebhookDelivery.objects.get().status == "processed"


def test_number_beyond_a_double_is_refused_before_anything_is_queued(send):
    body = json.dumps(opportunity_event(rawResource={"score": "SCORE"})).replace('"SCORE"', "-1e400")
    response = send(body.encode(), key="k1")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["data.rawResource.score"]
    assert IdempotencyKey.objects.count() == 0 and task_ids() == []
    assert send(opportunity_event(), key="k1").json() == {"status": "queued"}


def test_sync_mode_gives_up_a_leftover_queued_delivery_that_fails(send, settings, dead):
    # Nothing would run a retry outside deferred mode: the delivery dies, its key still held.
    send(opportunity_event(), key="k1")
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "sync"}

    with raising_receiver(opportunity_created, RuntimeError, "CRM is down"):
        with pytest.raises(RuntimeError):
            reprocess_delivery(WebhookDelivery.objects.get())
        # Dead already: nothing changes, and nobody is told twice.
        with pytest.raises(RuntimeError):
            reprocess_delivery(WebhookDelivery.objects.get())

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("dead", 1, None)
    assert "CRM is down" in delivery.error
    assert len(dead) == 1
    assert IdempotencyKey.objects.get().outcome == "queued"
    assert Opportunity.objects.count() == 0
