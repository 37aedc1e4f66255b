"""Upgrading a database that holds data: the new migrations run on top of the released ones."""

from __future__ import annotations

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
