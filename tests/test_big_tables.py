"""What keeps the app fast when its tables are big: estimated counts, trigram searches, the
indexes the lists need, concurrent index builds and batched pruning."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.db.migrations.loader import MigrationLoader
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from morph_webhooks import health
from morph_webhooks.admin import counting
from morph_webhooks.migrations._operations import (
    AddIndexConcurrently,
    AddTrigramIndexConcurrently,
    CreateTrigramExtension,
)
from morph_webhooks.models import Connection, Contact, Opportunity, SyncOutcome, WebhookDelivery
from morph_webhooks.testing.factories import OpportunityFactory, WebhookDeliveryFactory
from tests.helpers import postgresql_only

pytestmark = pytest.mark.django_db

DELIVERIES = reverse("admin:morph_webhooks_webhookdelivery_changelist")
OPPORTUNITIES = reverse("admin:morph_webhooks_opportunity_changelist")


def analyze(model: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def plan(queryset: Any) -> str:
    """The plan of ``queryset`` with sequential scans priced out: a handful of test rows would
    otherwise be read whole, whatever the indexes."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        return str(queryset.explain())


def paginator_line(response: Any) -> str:
    html = response.content.decode()
    start = html.index('<nav class="paginator"')
    return " ".join(html[start : html.index("</nav>", start)].split())


class TestEstimatedCounts:
    @postgresql_only
    def test_a_list_past_the_threshold_shows_postgresqls_estimate_said_to_be_one(
        self, admin_client, monkeypatch
    ):
        monkeypatch.setattr(counting, "ESTIMATE_ABOVE", 3)
        WebhookDeliveryFactory.create_batch(5)
        analyze(WebhookDelivery)
        # Rows since the statistics were taken are not in the estimate: it is one.
        WebhookDeliveryFactory.create_batch(2)

        response = admin_client.get(DELIVERIES)

        assert response.context["cl"].result_count == 5
        assert "about 5 webhook deliveries" in paginator_line(response)

    @postgresql_only
    def test_a_filtered_list_past_the_threshold_shows_the_planners_estimate(self, admin_client, monkeypatch):
        monkeypatch.setattr(counting, "ESTIMATE_ABOVE", 3)
        WebhookDeliveryFactory.create_batch(6, status="rejected", http_status=400)
        WebhookDeliveryFactory.create_batch(2)
        analyze(WebhookDelivery)

        response = admin_client.get(DELIVERIES, {"status__exact": "rejected"})

        assert response.context["cl"].paginator.estimated
        assert "about" in paginator_line(response)
        assert len(response.context["cl"].result_list) == 6

    @postgresql_only
    def test_a_big_search_says_its_count_of_results_is_an_estimate(self, admin_client, monkeypatch):
        monkeypatch.setattr(counting, "ESTIMATE_ABOVE", 3)
        WebhookDeliveryFactory.create_batch(5, idempotency_key="same")
        analyze(WebhookDelivery)

        response = admin_client.get(DELIVERIES, {"q": "same"})

        assert response.context["cl"].paginator.estimated
        assert "about 5 results" in response.content.decode()

    def test_below_the_threshold_the_count_is_exact_in_one_statement(self, admin_client, monkeypatch):
        monkeypatch.setattr(counting, "ESTIMATE_ABOVE", 3)
        WebhookDeliveryFactory.create_batch(3)
        if connection.vendor == "postgresql":
            analyze(WebhookDelivery)

        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(DELIVERIES)

        counts = [query["sql"] for query in queries.captured_queries if "COUNT(" in query["sql"]]
        assert len(counts) == 1
        assert not any("EXPLAIN" in query["sql"] or "reltuples" in query["sql"] for query in queries)
        assert not response.context["cl"].paginator.estimated
        assert "3 webhook deliveries" in paginator_line(response)
        assert "about" not in paginator_line(response)

    def test_sqlite_counts_exactly_whatever_the_size(self, admin_client, monkeypatch):
        if connection.vendor != "sqlite":
            pytest.skip("SQLite's behaviour")
        monkeypatch.setattr(counting, "ESTIMATE_ABOVE", 1)
        WebhookDeliveryFactory.create_batch(3)

        response = admin_client.get(DELIVERIES)

        assert not response.context["cl"].paginator.estimated
        assert "3 webhook deliveries" in paginator_line(response)

    @postgresql_only
    def test_a_table_never_analysed_is_counted_exactly(self, admin_client, monkeypatch):
        monkeypatch.setattr(counting, "ESTIMATE_ABOVE", 1)
        WebhookDeliveryFactory.create_batch(3)

        assert counting.estimated_rows(WebhookDelivery.objects.all()) in (None, 3)
        response = admin_client.get(DELIVERIES)

        assert response.context["cl"].result_count == 3


@postgresql_only
class TestSearchIndexes:
    def test_an_opportunity_name_search_reads_the_trigram_index(self):
        OpportunityFactory.create_batch(3)
        searched = Opportunity.objects.filter(name__icontains="acme")
        assert "morph_opp_name_trgm" in plan(searched)

    @pytest.mark.parametrize("column", ["first_name", "last_name", "email"])
    def test_each_contact_column_searched_has_its_trigram_index(self, column):
        searched = Contact.objects.filter(**{f"{column}__icontains": "ada"})
        assert f"morph_contact_{column}_trgm" in plan(searched)

    def test_the_admins_search_by_a_morph_id_reads_indexes_only(self, admin_client):
        OpportunityFactory.create_batch(3)
        found = admin_client.get(OPPORTUNITIES, {"q": "opp_1"}).context["cl"].queryset
        # Unordered and without the rows joined to them: which rows match, not how the page is
        # sorted or how its stages are read (on a few rows the planner may walk the ordering's
        # index, or read a tiny stage table whole).
        shown = plan(found.order_by().select_related(None))
        assert "morph_opp_name_trgm" in shown
        assert "Seq Scan" not in shown

    def test_deliveries_filtered_by_an_error_status_read_its_index(self):
        filtered = WebhookDelivery.objects.filter(http_status=400).order_by("-received_at")
        assert "morph_delivery_http_status_idx" in plan(filtered)

    def test_the_extension_is_installed(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
            assert cursor.fetchone() == (1,)


def test_contacts_are_found_by_either_name_or_email(admin_client):
    from morph_webhooks.testing.factories import MirroredResourceFactory

    class ContactFactory(MirroredResourceFactory[Contact]):
        class Meta:
            model = Contact

    ada = ContactFactory(remote_id="c1", first_name="Ada", last_name="Lovelace", email="ada@example.com")
    ContactFactory(remote_id="c2", first_name="Grace", last_name="Hopper", email="grace@example.com")
    changelist = reverse("admin:morph_webhooks_contact_changelist")

    for query in ("lovelace", "ada@example", "Ada"):
        response = admin_client.get(changelist, {"q": query})
        assert list(response.context["cl"].result_list) == [ada], query


class FakeEditor:
    """What the operations read of a schema editor, and the statements they run."""

    def __init__(self, vendor: str, fail: bool = False) -> None:
        self.connection = type(
            "C", (), {"vendor": vendor, "alias": "default", "settings_dict": {"NAME": "crm"}}
        )
        self.fail = fail
        self.executed: list[str] = []

    def quote_name(self, name: str) -> str:
        return f'"{name}"'

    def execute(self, sql: str) -> None:
        if self.fail:
            raise DatabaseError("permission denied to create extension")
        self.executed.append(sql)


class TestMigrationOperations:
    def states(self) -> Any:
        loader = MigrationLoader(connection)
        return loader.project_state(loader.graph.leaf_nodes("morph_webhooks")[0])

    def test_the_trigram_index_is_built_concurrently_on_the_expression_icontains_compiles_to(self):
        operation = AddTrigramIndexConcurrently(
            model_name="opportunity", column="name", name="morph_opp_name_trgm"
        )
        editor = FakeEditor("postgresql")
        state = self.states()

        operation.database_forwards("morph_webhooks", editor, state, state)
        operation.database_backwards("morph_webhooks", editor, state, state)

        assert editor.executed == [
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS "morph_opp_name_trgm" ON "morph_webhooks_opportunity" '
            'USING gin ((UPPER("name"::text)) gin_trgm_ops)',
            'DROP INDEX CONCURRENTLY IF EXISTS "morph_opp_name_trgm"',
        ]
        # The expression of the index is the one Django writes for icontains.
        sql = str(Opportunity.objects.filter(name__icontains="x").query)
        if connection.vendor == "postgresql":
            assert 'UPPER("morph_webhooks_opportunity"."name"::text) LIKE UPPER(' in sql

    def test_elsewhere_the_trigram_operations_do_nothing(self):
        editor = FakeEditor("sqlite")
        state = self.states()
        AddTrigramIndexConcurrently("opportunity", "name", "x").database_forwards(
            "morph_webhooks", editor, state, state
        )
        CreateTrigramExtension().database_forwards("morph_webhooks", editor, state, state)
        assert editor.executed == []

    def test_the_extension_that_cannot_be_created_says_what_to_run(self):
        state = self.states()
        with pytest.raises(
            DatabaseError, match=r'could not be created in the database .crm.*"CREATE EXTENSION pg_trgm;"'
        ):
            CreateTrigramExtension().database_forwards(
                "morph_webhooks", FakeEditor("postgresql", fail=True), state, state
            )

    def test_every_index_on_a_big_table_is_built_concurrently_by_a_non_atomic_migration(self):
        loader = MigrationLoader(connection)
        big = {"webhookdelivery", "idempotencykey", "opportunity", "contact", "company", "engagement"}
        for name in (
            "0006_delivery_connection_index",
            "0014_trigram_search_indexes",
            "0015_admin_list_indexes",
        ):
            migration = loader.get_migration("morph_webhooks", name)
            assert migration.atomic is False, name
            indexes = [op for op in migration.operations if getattr(op, "model_name", None) in big]
            assert indexes and all(
                isinstance(op, (AddIndexConcurrently, AddTrigramIndexConcurrently)) for op in indexes
            ), name

    @postgresql_only
    def test_the_migrated_database_holds_each_trigram_index(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'morph_opp_name_trgm'")
            (definition,) = cursor.fetchone()
        assert "USING gin (upper((name)::text) gin_trgm_ops)" in definition


class TestSilence:
    @pytest.fixture(autouse=True)
    def thresholds(self, settings):
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "SILENCE_THRESHOLD": 3600}

    def test_only_the_first_silent_connections_are_named_the_rest_counted(self):
        long_ago = timezone.now() - timedelta(hours=2)
        for owner in ["t7", "t1", "t3", "t5", "t2", "t6", "t4"]:
            Connection.register("hubspot", owner)
            WebhookDeliveryFactory(owner_id=owner)
        Connection.register("hubspot", "recent")
        WebhookDeliveryFactory(owner_id="recent")
        WebhookDelivery.objects.exclude(owner_id="recent").update(received_at=long_ago)

        result = health.silent_connections()

        assert result.detail.startswith("7 connections silent: hubspot / t1 (since ")
        assert [part.split(" (")[0] for part in result.detail.split(": ", 1)[1].split("), ")][:5] == [
            f"hubspot / t{n}" for n in range(1, 6)
        ]
        assert result.detail.endswith(" and 2 more.")
        heard, silent, first = health.silence(timezone.now())
        assert (heard, silent, len(first)) == (8, 7, 5)
        assert first[0][2] == WebhookDelivery.objects.get(owner_id="t1").received_at

    def test_sync_problems_name_the_first_connections_and_count_the_rest(self):
        started = timezone.now() - timedelta(minutes=5)
        for n in range(7):
            Connection.objects.create(
                connector_id="hubspot",
                owner_id=f"t{n}",
                last_sync_started_at=started,
                last_sync_finished_at=started,
                last_sync_outcome=SyncOutcome.FAILED,
            )
        detail = health.connection_syncs().detail
        assert detail == (
            "last sync failed: hubspot / t0, hubspot / t1, hubspot / t2, hubspot / t3, hubspot / t4 and 2 more."
        )


class TestPruneInBatches:
    def old(self, days: float, **fields: Any) -> WebhookDelivery:
        delivery = WebhookDeliveryFactory(**fields)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            received_at=timezone.now() - timedelta(days=days)
        )
        return delivery

    def test_deletes_exactly_the_old_settled_deliveries_across_batches_of_one_instant(self):
        same_instant = timezone.now() - timedelta(days=40)
        tied = [WebhookDeliveryFactory() for _ in range(5)]
        WebhookDelivery.objects.filter(pk__in=[d.pk for d in tied]).update(received_at=same_instant)
        older = [self.old(50) for _ in range(3)]
        kept = [
            self.old(45, status="queued"),
            self.old(45, status="dead"),
            self.old(29),
            WebhookDeliveryFactory(),
        ]

        with CaptureQueriesContext(connection) as queries:
            output = StringIO()
            call_command(
                "morph_webhooks_prune", "--batch-size", "2", "--deliveries-days", "30", stdout=output
            )

        assert "Deleted 8 deliveries." in output.getvalue()
        assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {d.pk for d in kept}
        assert not {d.pk for d in tied + older} & set(WebhookDelivery.objects.values_list("pk", flat=True))
        deliveries = [q["sql"] for q in queries.captured_queries if "webhookdelivery" in q["sql"]]
        deletes = [sql for sql in deliveries if sql.startswith("DELETE")]
        reads = [sql for sql in deliveries if sql.startswith("SELECT")]
        assert len(deletes) == 4  # 8 rows, 2 a batch
        # Read in the order of the index the prune filters on, each batch after the last.
        assert all(
            sql.startswith('SELECT "morph_webhooks_webhookdelivery"."received_at" AS "received_at", ')
            and sql.endswith("ORDER BY 1 ASC, 2 ASC LIMIT 2")
            for sql in reads
        )
        assert sum('"received_at" >= ' in sql for sql in reads) == len(reads) - 1

    def test_the_pause_comes_between_full_batches(self, monkeypatch):
        from morph_webhooks.management.commands import morph_webhooks_prune

        pauses: list[float] = []
        monkeypatch.setattr(morph_webhooks_prune.time, "sleep", pauses.append)
        for _ in range(5):
            self.old(40)

        call_command("morph_webhooks_prune", "--batch-size", "2", "--pause", "0.25", stdout=StringIO())

        assert pauses == [0.25, 0.25]  # after the two full batches; none after the last, partial one
        assert not WebhookDelivery.objects.exists()
