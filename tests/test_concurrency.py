"""Concurrent deliveries on PostgreSQL, over real connections (one per thread)."""

from __future__ import annotations

import base64
import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from morph_webhooks import signals
from morph_webhooks.auth import signature_headers
from morph_webhooks.models import IdempotencyKey, Opportunity, Pipeline, Stage, WebhookDelivery
from morph_webhooks.testing import morph_headers, opportunity_event, post_event, resource_event
from tests.helpers import T0, postgresql_only

pytestmark = [
    pytest.mark.django_db(transaction=True),
    postgresql_only,
]


def deliver_all(requests: list[tuple[dict[str, Any], str]], workers: int) -> list[dict[str, Any]]:
    """Post every (payload, key) from ``workers`` threads released at once; return the answers."""
    barrier = threading.Barrier(workers)

    def worker(chunk: list[tuple[dict[str, Any], str]]) -> list[tuple[int, dict[str, Any]]]:
        client = Client()
        answers = []
        try:
            barrier.wait()
            for payload, key in chunk:
                response = post_event(client, payload, headers=morph_headers(key))
                answers.append((response.status_code, response.json()))
        finally:
            connection.close()
        return answers

    chunks = [requests[index::workers] for index in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        results = [answer for answers in pool.map(worker, chunks) for answer in answers]
    assert all(code == 200 for code, _ in results), results
    return [body for _, body in results]


def test_simultaneous_deliveries_of_one_key_process_once(sent_signals):
    answers = deliver_all([(opportunity_event("created"), "same-key")] * 20, workers=20)

    assert Counter(answer["status"] for answer in answers) == {"processed": 1, "duplicate": 19}
    assert sent_signals.names == ["created"]
    key = IdempotencyKey.objects.get()
    assert key.deliveries == 20
    assert Opportunity.objects.count() == 1
    assert WebhookDelivery.objects.count() == 20


def test_shuffled_parallel_updates_end_with_the_newest(sent_signals):
    minutes = list(range(120))
    random.Random(7).shuffle(minutes)
    requests = [
        (
            opportunity_event(
                "updated", updated_at=T0 + timedelta(minutes=m), fields={"stage": f"s{m}", "amount": m}
            ),
            f"k{m}",
        )
        for m in minutes
    ]
    answers = deliver_all(requests, workers=8)

    opportunity = Opportunity.objects.get()
    assert (opportunity.stage_id, opportunity.amount, opportunity.remote_updated_at) == (
        "s119",
        119,
        T0 + timedelta(minutes=119),
    )
    processed = sum(answer["status"] == "processed" for answer in answers)
    assert processed + sum(answer["status"] == "stale" for answer in answers) == 120
    # Each applied update sent its signal once, and the applied ones went forward in time.
    assert len(sent_signals.calls) == processed
    keys = [kwargs["event"].idempotency_key for _, kwargs in sent_signals.calls]
    assert len(set(keys)) == len(keys)
    applied = [kwargs["event"].remote_updated_at for _, kwargs in sent_signals.calls]
    assert applied == sorted(applied)
    assert IdempotencyKey.objects.count() == 120


@pytest.mark.parametrize(("delete_at", "ends_deleted"), [(30, False), (45, True)])
def test_delete_racing_updates(sent_signals, delete_at, ends_deleted):
    requests = [
        (
            opportunity_event("updated", updated_at=T0 + timedelta(minutes=m), fields={"stage": f"s{m}"}),
            f"u{m}",
        )
        for m in range(40)
    ]
    requests.append(
        (opportunity_event("deleted", updated_at=T0 + timedelta(minutes=delete_at), fields={}), "delete")
    )
    random.Random(delete_at).shuffle(requests)
    deliver_all(requests, workers=8)

    opportunity = Opportunity.objects.get()
    assert opportunity.is_deleted is ends_deleted
    assert opportunity.remote_updated_at == T0 + timedelta(minutes=max(39, delete_at))
    if not ends_deleted:
        assert opportunity.stage_id == "s39"


def test_simultaneous_replays_of_a_signed_request_are_accepted_once(settings):
    signing_secret = "whsec_" + base64.b64encode(b"a signing key of thirty-two byte").decode()
    settings.MORPH_WEBHOOKS = {"SIGNING_SECRETS": [signing_secret]}
    body = json.dumps(opportunity_event()).encode()
    signed = signature_headers(signing_secret, "msg_1", body)
    barrier = threading.Barrier(10)

    def replay(owner: int) -> int:
        try:
            barrier.wait()
            response = Client().post(
                "/webhooks/morph/",
                data=body,
                content_type="application/json",
                headers={**morph_headers(owner_id=f"tenant_{owner}"), **signed},
            )
            return int(response.status_code)
        finally:
            connection.close()

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(replay, range(10)))

    assert Counter(statuses) == {200: 1, 401: 9}
    assert Opportunity.objects.count() == WebhookDelivery.objects.count() == 1


def test_events_creating_the_same_new_resources_in_opposite_orders_both_apply():
    # Each pipeline's event creates the same two new stages, in the opposite order: each inserts
    # its first, then waits for the other's on the unique index. PostgreSQL ends the deadlock by
    # failing one transaction, which starts over and then finds both stages stored.
    def pipeline(remote_id: str, stages: list[str]) -> dict[str, Any]:
        expanded = [
            resource_event("crmStage", remote_id=stage, fields={"name": stage})["data"] for stage in stages
        ]
        return resource_event(
            "crmPipeline", "created", remote_id, fields={"name": remote_id, "stages": expanded}
        )

    both_hold_one = threading.Barrier(2, timeout=10)
    waited: set[int] = set()

    def hold_the_first(instance: Stage, **kwargs: Any) -> None:
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            both_hold_one.wait()

    def deliver(payload: dict[str, Any]) -> int:
        try:
            return int(post_event(Client(), payload, headers=morph_headers()).status_code)
        finally:
            connection.close()

    signals.stage_created.connect(hold_the_first, weak=False, dispatch_uid="test-opposite-orders")
    try:
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(deliver, [pipeline("p1", ["s1", "s2"]), pipeline("p2", ["s2", "s1"])]))
    finally:
        signals.stage_created.disconnect(dispatch_uid="test-opposite-orders")

    assert statuses == [200, 200]
    assert Pipeline.objects.count() == 2 and Stage.objects.count() == 2
