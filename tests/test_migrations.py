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


BEFORE_RELATIONS = [(APP, "0012_mirrored_engagements_and_workspaces")]
RELATIONS = [(APP, "0013_relations")]


def test_the_relations_are_derived_from_the_stored_ids_in_batches_and_back(monkeypatch) -> None:
    executor = migrate(BEFORE_RELATIONS)
    old = executor.loader.project_state(BEFORE_RELATIONS).apps

    def stored(model: str, tenant: str, remote_id: str, **fields: object) -> None:
        old.get_model(APP, model).objects.create(
            connector_id="hubspot",
            owner_id=tenant,
            remote_id=remote_id,
            remote_created_at=T0,
            remote_updated_at=T0,
            **fields,
        )

    for tenant in ("tenant_1", "tenant_2"):
        stored("Stage", tenant, "s1", name=f"stage of {tenant}", pipeline_id="p1")
        stored("Pipeline", tenant, "p1", name=f"pipeline of {tenant}")
        stored("Contact", tenant, "c1", email=f"c1@{tenant}")
        stored(
            "Engagement", tenant, "e1", title=f"call of {tenant}", opportunity_ids=["d2"], contact_ids=["c1"]
        )
    # A deal listing the engagement that lists it back, one listing it alone, and ids of no row.
    stored(
        "Opportunity",
        "tenant_1",
        "d1",
        name="one",
        stage_id="s1",
        contact_ids=["c1", "c9"],
        engagement_ids=["e1"],
    )
    stored("Opportunity", "tenant_1", "d2", name="two", stage_id="", contact_ids=[], engagement_ids=["e1"])
    stored("Opportunity", "tenant_2", "d1", name="other", stage_id="s1", contact_ids="not a list")
    # Batches of two rows: every table is filled over several.
    module = sys.modules[executor.loader.get_migration(*RELATIONS[0]).__module__]
    monkeypatch.setattr(module, "BATCH", 2)

    new = migrate(RELATIONS).loader.project_state(RELATIONS).apps
    from morph_webhooks.models import Contact, Engagement, Opportunity, Stage

    one = Opportunity.objects.get(owner_id="tenant_1", remote_id="d1")
    assert one.stage.name == "stage of tenant_1"
    assert one.stage.pipeline.name == "pipeline of tenant_1"
    assert [c.email for c in one.contacts.all()] == ["c1@tenant_1"]
    assert Opportunity.objects.get(owner_id="tenant_2").stage.name == "stage of tenant_2"
    assert list(Opportunity.objects.get(owner_id="tenant_2").contacts.all()) == []
    assert Opportunity.objects.get(remote_id="d2").stage is None
    call = Engagement.objects.get(owner_id="tenant_1")
    assert sorted(call.opportunities.values_list("name", flat=True)) == ["one", "two"]
    assert [c.email for c in call.contacts.all()] == ["c1@tenant_1"]
    assert list(Engagement.objects.get(owner_id="tenant_2").opportunities.all()) == []
    assert Stage.objects.filter(opportunities__name="other").get().owner_id == "tenant_2"
    assert Contact.objects.get(owner_id="tenant_1").opportunities.get().name == "one"
    link = new.get_model(APP, "EngagementOpportunity")
    assert sorted(link.objects.values_list("listed_by_engagement", "listed_by_opportunity")) == [
        (False, True),  # tenant_1's d1: by the deal only
        (True, False),  # tenant_2's d2, which has not arrived: by the engagement only
        (True, True),  # tenant_1's d2: by both sides
    ]

    # Back: the columns and tables go, the ids stay.
    migrate(BEFORE_RELATIONS)
    assert old.get_model(APP, "Opportunity").objects.get(owner_id="tenant_1", remote_id="d1").contact_ids == [
        "c1",
        "c9",
    ]
    migrate(executor.loader.graph.leaf_nodes(APP))
