"""Upgrading a database that holds data: the new migrations run on top of the released ones."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

APP = "morph_webhooks"
BEFORE_RELATED_RESOURCES = [(APP, "0003_delivery_raw_body_and_reprocessed_at")]
T0 = datetime(2025, 3, 6, 9, 0, tzinfo=timezone.utc)


def migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor


def test_the_related_resources_migrate_over_stored_opportunities() -> None:
    executor = migrate(BEFORE_RELATED_RESOURCES)
    old_apps = executor.loader.project_state(BEFORE_RELATED_RESOURCES).apps
    old_apps.get_model(APP, "Opportunity").objects.create(
        connector_id="hubspot",
        owner_id="tenant_1",
        remote_id="opp_1",
        name="Acme",
        stage_id="won",
        remote_created_at=T0,
        remote_updated_at=T0,
    )

    latest = executor.loader.graph.leaf_nodes(APP)
    new_apps = migrate(latest).loader.project_state(latest).apps

    assert new_apps.get_model(APP, "Opportunity").objects.get().name == "Acme"
    stage = new_apps.get_model(APP, "Stage").objects.create(
        connector_id="hubspot",
        owner_id="tenant_1",
        remote_id="won",
        type="WON",
        remote_created_at=T0,
        remote_updated_at=T0,
    )
    assert stage.pk is not None


BEFORE_SCRUB = [(APP, "0010_connector_and_owner_labels")]
SCRUB = [(APP, "0011_scrub_delivery_credentials")]


def test_old_deliveries_are_scrubbed_of_tokens_and_signatures_in_batches(monkeypatch, settings) -> None:
    # As a project without a secret configured runs it: the scrub reads no setting.
    settings.MORPH_WEBHOOKS = {}
    executor = migrate(BEFORE_SCRUB)
    old_apps = executor.loader.project_state(BEFORE_SCRUB).apps
    Delivery = old_apps.get_model(APP, "WebhookDelivery")
    logged_before_masking = {
        "x-conector-id": "hubspot",
        "x-original-url": "/webhooks/morph/?token=old-secret-1&source=morph",
        "referer": "https://crm.example.com/?TOKEN=old%2Bsecret",
        "webhook-id": "msg_1",
        "webhook-signature": "v1,c2lnbmF0dXJl",
        "Authorization": "Bearer old-secret-1",
    }
    common = {"status": "processed", "http_status": 200, "body": "{}"}
    stored = [
        Delivery.objects.create(
            path="/webhooks/morph/?next=%2F%3Ftoken%3Dx&ref=token=old-secret-2",
            headers=logged_before_masking,
            **common,
        ),
        Delivery.objects.create(path="/webhooks/morph/", headers={"x-conector-id": "hubspot"}, **common),
        *(
            Delivery.objects.create(
                path="/webhooks/morph/", headers={"x-forwarded-uri": f"/?token=s{n}"}, **common
            )
            for n in range(3)
        ),
    ]
    # Small batches, so that several run.
    scrub = executor.loader.get_migration(*SCRUB[0])
    monkeypatch.setattr(sys.modules[type(scrub).__module__], "BATCH_SIZE", 2)

    migrate(SCRUB)

    rows = {row.pk: row for row in Delivery.objects.all()}
    first, clean, *others = (rows[delivery.pk] for delivery in stored)
    assert first.headers == {
        "x-conector-id": "hubspot",
        "x-original-url": "/webhooks/morph/?token=[redacted]&source=morph",
        "referer": "https://crm.example.com/?TOKEN=[redacted]",
        "webhook-id": "msg_1",
    }
    assert first.path == "/webhooks/morph/?next=%2F%3Ftoken%3Dx&ref=token=[redacted]"
    assert (clean.path, clean.headers) == ("/webhooks/morph/", {"x-conector-id": "hubspot"})
    assert [row.headers for row in others] == [{"x-forwarded-uri": "/?token=[redacted]"}] * 3

    # Reversible, restoring nothing.
    migrate(BEFORE_SCRUB)
    assert Delivery.objects.get(pk=first.pk).headers == first.headers
    migrate(executor.loader.graph.leaf_nodes(APP))
