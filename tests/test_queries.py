"""Exact SQL statement counts per delivery: the cost does not grow with the payload."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models.signals import post_save
from django_tasks_db.models import DBTaskResult

from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery
from morph_webhooks.signals import opportunity_created
from morph_webhooks.statements import (
    _IDS,
    _claim_inserting,
    _claim_sql,
    _compile_claim_due,
    _compile_insert,
    _compile_select,
    _compile_update,
    _settle_sql,
    insert_many,
)
from morph_webhooks.testing import engagement_event, opportunity_event, reference
from morph_webhooks.worker import Worker
from tests.helpers import T0, postgresql_only, statements

# Counted: every event of a known connection (a new one's first costs one more statement).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("known_connection")]


def small_event(action: str, minutes: int):
    return opportunity_event(action, updated_at=T0 + timedelta(minutes=minutes))


def big_event(action: str, minutes: int):
    fields = {
        "name": "Big",
        "contacts": [reference("genericContact", f"c{i}") for i in range(500)],
        "companies": [reference("genericCompany", f"co{i}") for i in range(200)],
    }
    raw = {f"p{i}": "v" * 50 for i in range(500)}
    return opportunity_event(
        action, updated_at=T0 + timedelta(minutes=minutes), fields=fields, rawResource=raw
    )


def verbs(sql: list[str]) -> list[str]:
    return [" ".join(statement.split()[:3]) for statement in sql]


def new_deals_pairs() -> list[str]:
    """What writes the pairs of a new deal's contacts and companies: an INSERT each, one
    statement on PostgreSQL (the first INSERT a WITH query of the second)."""
    if connection.vendor == "postgresql":
        return ["WITH p0 AS"]
    return [
        'INSERT INTO "morph_webhooks_opportunitycontact"',
        'INSERT INTO "morph_webhooks_opportunitycompany"',
    ]


@pytest.mark.parametrize("make_event", [small_event, big_event])
def test_statements_per_delivery(send, make_event):
    with statements() as new:
        assert send(make_event("created", 0), key="k1").json() == {"status": "processed"}
    with statements() as duplicate:
        assert send(make_event("created", 0), key="k1").json() == {"status": "duplicate"}
    with statements() as update:
        assert send(make_event("updated", 1), key="k2").json() == {"status": "processed"}
    with statements() as stale:
        assert send(make_event("updated", 0), key="k3").json() == {"status": "stale"}

    # PostgreSQL: the claim carries a SET LOCAL lock_timeout (LOCK_TIMEOUT) in the same query
    # string, run before the claim first waits for a lock (morph_webhooks.statements says why).
    set_local = "SET LOCAL lock_timeout = '10000ms'; " if connection.vendor == "postgresql" else ""
    claim = f'{set_local}INSERT INTO "morph_webhooks_idempotencykey"'
    # 1. claim the key, or count a redelivery of it (one upsert);
    # 2. lock the opportunity's row (FOR UPDATE: orders concurrent events for one resource);
    # 3. write it (INSERT when new, UPDATE when newer), and the pairs of each list it fills
    #    (its contacts, its companies: one INSERT each, however long);
    # 4. log the delivery.
    assert [statement.startswith(claim) for statement in new] == [True] + [False] * (
        3 + len(new_deals_pairs())
    )
    assert "ON CONFLICT" in new[0] and "RETURNING" in new[0]
    assert verbs(new[1:]) == [
        'SELECT "morph_webhooks_opportunity"."id", "morph_webhooks_opportunity"."connector_id",',
        'INSERT INTO "morph_webhooks_opportunity"',
        *new_deals_pairs(),
        'INSERT INTO "morph_webhooks_webhookdelivery"',
    ]
    assert "FOR UPDATE" in new[1] or connection.vendor == "sqlite"
    # A duplicate: the claim counts it, and the delivery is logged.
    assert duplicate[0].startswith(claim)
    assert verbs(duplicate[1:]) == ['INSERT INTO "morph_webhooks_webhookdelivery"']
    assert update[0].startswith(claim)
    assert verbs(update[1:]) == [
        'SELECT "morph_webhooks_opportunity"."id", "morph_webhooks_opportunity"."connector_id",',
        'UPDATE "morph_webhooks_opportunity" SET',
        'INSERT INTO "morph_webhooks_webhookdelivery"',
    ]
    # Stale: the key, claimed as if the event would apply, is told its outcome instead of the write.
    assert stale[0].startswith(claim)
    assert verbs(stale[1:]) == [
        'SELECT "morph_webhooks_opportunity"."id", "morph_webhooks_opportunity"."connector_id",',
        'UPDATE "morph_webhooks_idempotencykey" SET',
        'INSERT INTO "morph_webhooks_webhookdelivery"',
    ]


def test_statements_of_an_opportunitys_lists(send):
    """An empty or unchanged list costs no statement; a changed one a DELETE of the pairs it no
    longer lists and an INSERT of those it does, whatever its length."""

    def listing(minutes, *contacts, action="updated"):
        fields = {"name": "Deal", "contacts": [reference("genericContact", c) for c in contacts]}
        return opportunity_event(action, updated_at=T0 + timedelta(minutes=minutes), fields=fields)

    written = []
    for event in (
        listing(0, action="created"),
        listing(1, "c1", "c2"),
        listing(2, "c2", "c1"),
        listing(3, *(f"c{i}" for i in range(3, 700))),
        listing(4),
    ):
        with statements() as sql:
            assert send(event).json() == {"status": "processed"}
        written.append(verbs(sql[2:-1]))
    update = 'UPDATE "morph_webhooks_opportunity" SET'
    pairs = "morph_webhooks_opportunitycontact"
    assert written == [
        ['INSERT INTO "morph_webhooks_opportunity"'],  # a new row with empty lists: as before
        [update, f'INSERT INTO "{pairs}"'],  # was empty: nothing to delete
        [update],  # the same contacts in another order
        [update, f'DELETE FROM "{pairs}"', f'INSERT INTO "{pairs}"'],
        [update, f'DELETE FROM "{pairs}"'],
    ]


def test_statements_of_a_list_both_sides_keep(send):
    """An engagement's opportunities, which the opportunities list too: a changed list takes this
    side's mark off the pairs the other side lists (an UPDATE) besides the DELETE and INSERT."""

    def listing(minutes, *deals):
        fields = {"type": "call", "opportunities": [reference("crmOpportunity", d) for d in deals]}
        return engagement_event("updated", updated_at=T0 + timedelta(minutes=minutes), fields=fields)

    written = []
    for event in (listing(0, "d1"), listing(1, "d2"), listing(2)):
        with statements() as sql:
            assert send(event).json() == {"status": "processed"}
        written.append(verbs(sql[2:-1]))
    pairs = "morph_webhooks_engagementopportunity"
    assert written == [
        ['INSERT INTO "morph_webhooks_engagement"', f'INSERT INTO "{pairs}"'],
        [
            'UPDATE "morph_webhooks_engagement" SET',
            f'DELETE FROM "{pairs}"',
            f'UPDATE "{pairs}" SET',
            f'INSERT INTO "{pairs}"',
        ],
        ['UPDATE "morph_webhooks_engagement" SET', f'DELETE FROM "{pairs}"', f'UPDATE "{pairs}" SET'],
    ]


def test_statements_per_queued_delivery(send, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred"}
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    with statements() as new:
        assert send(small_event("created", 0), key="k1").json() == {"status": "queued"}
    with statements() as duplicate:
        assert send(small_event("created", 0), key="k1").json() == {"status": "duplicate"}

    task = f'INSERT INTO "{DBTaskResult._meta.db_table}"'
    delivery = 'INSERT INTO "morph_webhooks_webhookdelivery"'
    if connection.vendor == "postgresql":
        # 1. claim the key and log the delivery as queued, in one statement (after the claim's
        #    SET LOCAL, in the same query string);
        # 2. enqueue its task, through the task backend (committed with the delivery).
        assert [verbs([statement])[0] for statement in new] == ["SET LOCAL lock_timeout", task]
        combined = "SET LOCAL lock_timeout = '10000ms'; WITH claim AS (INSERT INTO"
        assert new[0].startswith(combined)
        assert '"morph_webhooks_idempotencykey"' in new[0] and delivery in new[0]
        # A duplicate: the same statement, then the delivery corrected; no task.
        assert duplicate[0].startswith(combined)
        assert verbs(duplicate[1:]) == ['UPDATE "morph_webhooks_webhookdelivery" SET']
    else:
        # SQLite has no data-modifying WITH: the claim, then the delivery, then its task.
        claim = 'INSERT INTO "morph_webhooks_idempotencykey"'
        assert verbs(new) == [claim, delivery, task]
        assert verbs(duplicate) == [claim, delivery]
    assert list(WebhookDelivery.objects.order_by("pk").values_list("status", "attempts")) == [
        ("queued", 0),
        ("duplicate", 1),
    ]
    assert IdempotencyKey.objects.get().deliveries == 2


def test_statements_per_delivery_queued_in_its_table(send, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
    with statements() as queued:
        assert send(small_event("created", 0), key="k1").json() == {"status": "queued"}
    with statements() as applied:
        assert Worker(until_empty=True).run() == 1

    delivery = 'INSERT INTO "morph_webhooks_webhookdelivery"'
    if connection.vendor == "postgresql":
        # The claim and the queued delivery in one statement, and no task.
        assert len(queued) == 1 and delivery in queued[0]
        assert queued[0].startswith("SET LOCAL lock_timeout = '10000ms'; WITH claim AS (INSERT INTO")
    else:
        assert verbs(queued) == ['INSERT INTO "morph_webhooks_idempotencykey"', delivery]
    assert not DBTaskResult.objects.exists()
    # The worker: its claim (one UPDATE of the due delivery, leased with its attempt counted), the
    # delivery applied, and a last claim that finds none due.
    claim = 'UPDATE "morph_webhooks_webhookdelivery" SET'
    assert verbs(applied) == [
        claim,
        *(["SET LOCAL lock_timeout"] if connection.vendor == "postgresql" else []),
        'SELECT "morph_webhooks_opportunity"."id", "morph_webhooks_opportunity"."connector_id",',
        'UPDATE "morph_webhooks_idempotencykey" SET',
        'INSERT INTO "morph_webhooks_opportunity"',
        *new_deals_pairs(),
        'UPDATE "morph_webhooks_webhookdelivery" SET',
        claim,
    ]
    assert '"attempts" = "attempts" + 1 WHERE "id" = (SELECT "id"' in applied[0]
    if connection.vendor == "postgresql":
        assert "FOR UPDATE SKIP LOCKED" in applied[0]
    assert WebhookDelivery.objects.get().status == "processed"


def test_lock_timeout_can_be_switched_off(send, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "LOCK_TIMEOUT": 0}
    with statements() as sql:
        assert send(small_event("created", 0), key="k1").json() == {"status": "processed"}
    assert len(sql) == 4 + len(new_deals_pairs())  # test_statements_per_delivery's
    assert verbs(sql)[0] == 'INSERT INTO "morph_webhooks_idempotencykey"'


def test_rejected_request_is_one_statement(send):
    with statements() as sql:
        assert send(opportunity_event(fields={"amount": -1})).status_code == 400
    assert verbs(sql) == ['INSERT INTO "morph_webhooks_webhookdelivery"']


def test_statements_name_tables_and_columns_from_meta(monkeypatch):
    # A project's db_table or db_column must not break the statements written outside the ORM.
    for model, renamed in (
        (IdempotencyKey, "deliveries"),
        (Opportunity, "stage_id"),
        (WebhookDelivery, "attempts"),
    ):
        monkeypatch.setattr(model._meta, "db_table", f"custom_{model._meta.model_name}")
        monkeypatch.setattr(model._meta.get_field(renamed), "column", f"custom_{renamed}")
        monkeypatch.setattr(model._meta.get_field("owner_id"), "column", "custom_owner_id")
        for field in model._meta.concrete_fields:
            # Its column expression, cached by Django under the names it was first used with.
            monkeypatch.delitem(field.__dict__, "cached_col", raising=False)
    quote = connection.ops.quote_name

    with transaction.atomic():  # FOR UPDATE compiles only in a transaction
        lock = _compile_select(Opportunity, connection, True, _IDS)
    compiled = {
        "claim": (_claim_sql(IdempotencyKey, connection), IdempotencyKey, ["deliveries", "owner_id"]),
        "settle": (_settle_sql(IdempotencyKey, connection, True), IdempotencyKey, ["owner_id"]),
        "lock": (lock.sql, Opportunity, ["stage_id", "owner_id"]),
        "insert": (_compile_insert(Opportunity, connection).sql, Opportunity, ["stage_id", "owner_id"]),
        "update": (_compile_update(Opportunity, connection).sql, Opportunity, ["stage_id", "owner_id"]),
        # The own worker's claim of a queued delivery.
        "claim due": (
            _compile_claim_due(WebhookDelivery, connection).sql,
            WebhookDelivery,
            ["attempts", "owner_id"],
        ),
        # The claim with an insert of another model's row (deferred mode's delivery, here renamed).
        "claim and insert": (
            _claim_inserting(IdempotencyKey, Opportunity, connection)[0],
            IdempotencyKey,
            ["deliveries", "owner_id"],
        ),
    }

    for name, (sql, model, renamed) in compiled.items():
        assert quote(f"custom_{model._meta.model_name}") in sql, name
        for column in renamed:
            assert quote(f"custom_{column}") in sql and quote(column) not in sql, name
        assert "morph_webhooks_" not in sql, name
    # The row is rebuilt by attribute name, whatever the column.
    assert "stage_id" in lock.attnames and "owner_id" in lock.attnames


def test_compiled_writes_keep_what_save_does(send):
    saved = []

    def record(sender, instance, created, **kwargs):
        saved.append((sender.__name__, created, instance.pk is not None))

    post_save.connect(record, weak=False, dispatch_uid="test-compiled-writes")
    try:
        send(small_event("created", 0), key="k1")
        created_at = Opportunity.objects.get().updated_at
        send(small_event("updated", 1), key="k2")
    finally:
        post_save.disconnect(dispatch_uid="test-compiled-writes")

    assert saved == [
        ("Opportunity", True, True),
        ("WebhookDelivery", True, True),
        ("Opportunity", False, True),
        ("WebhookDelivery", True, True),
    ]
    # auto_now and auto_now_add are the fields' pre_save(), as in save().
    assert Opportunity.objects.get().updated_at > created_at
    assert all(delivery.received_at for delivery in WebhookDelivery.objects.all())


@postgresql_only
def test_with_server_side_binding_the_lock_timeout_is_a_statement_of_its_own(send):
    # Prepared statements hold one statement each: the SET LOCAL cannot travel with the claim.
    options = connection.settings_dict["OPTIONS"]
    connection.close()
    options["server_side_binding"] = True
    try:
        with statements() as sql:
            assert send(small_event("created", 0), key="k1").json() == {"status": "processed"}
        with statements() as duplicate:
            assert send(small_event("created", 0), key="k1").json() == {"status": "duplicate"}
    finally:
        connection.close()
        del options["server_side_binding"]

    assert sql[0] == "SET LOCAL lock_timeout = '10000ms'"
    assert verbs(sql[1:]) == [
        'INSERT INTO "morph_webhooks_idempotencykey"',
        'SELECT "morph_webhooks_opportunity"."id", "morph_webhooks_opportunity"."connector_id",',
        'INSERT INTO "morph_webhooks_opportunity"',
        *new_deals_pairs(),
        'INSERT INTO "morph_webhooks_webhookdelivery"',
    ]
    assert len(duplicate) == 3


def test_rows_inserted_together_keep_what_save_does(monkeypatch):
    # More rows than one statement may carry (SQLite bounds its parameters): one INSERT per batch,
    # each row's pre_save before it, its post_save (created) after, in the rows' order.
    monkeypatch.setattr(connection.ops, "bulk_batch_size", lambda fields, objs: 2)
    saved = []

    def record(sender, instance, created, **kwargs):
        saved.append((instance.remote_id, created, instance.pk))

    rows = [
        Opportunity(
            connector_id="hubspot",
            owner_id="tenant_1",
            remote_id=f"opp_{index}",
            remote_created_at=T0,
            remote_updated_at=T0,
        )
        for index in range(3)
    ]
    post_save.connect(record, sender=Opportunity, weak=False, dispatch_uid="test-insert-many")
    try:
        with statements() as sql, transaction.atomic():
            insert_many(rows)
    finally:
        post_save.disconnect(sender=Opportunity, dispatch_uid="test-insert-many")

    assert verbs(sql) == 2 * ['INSERT INTO "morph_webhooks_opportunity"']
    stored = dict(Opportunity.objects.values_list("remote_id", "pk"))
    assert saved == [(f"opp_{index}", True, stored[f"opp_{index}"]) for index in range(3)]
    assert all(row.created_at and row.updated_at and not row._state.adding for row in rows)


def test_the_worker_keeps_its_database_connection_from_one_delivery_to_the_next(send, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
    assert connection.settings_dict["CONN_MAX_AGE"] == 0  # Django's default: one per request
    for n in range(3):
        send(opportunity_event(remote_id=f"opp_{n}"), key=f"k{n}")
    seen = []
    opportunity_created.connect(
        lambda **kwargs: seen.append(id(connection.connection)), weak=False, dispatch_uid="test-seen"
    )
    try:
        assert Worker(until_empty=True).run() == 3
    finally:
        opportunity_created.disconnect(dispatch_uid="test-seen")
    # Not a new connection (a new login) for each delivery.
    assert len(seen) == 3 and len(set(seen)) == 1
