"""The admin's overview page: deliveries per hour and outcome, connections, latest failures, open
pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from django.utils.timezone import localtime

from morph_webhooks import health
from morph_webhooks.admin.deliveries import WebhookDeliveryAdmin
from morph_webhooks.admin.overview import OVERVIEW_FAILURES, duration_text, error_summary
from morph_webhooks.models import Connection, Opportunity, Outcome, StageType, WebhookDelivery
from morph_webhooks.testing.factories import OpportunityFactory, StageFactory, WebhookDeliveryFactory
from tests.helpers import T0, grant

pytestmark = pytest.mark.django_db

OVERVIEW = "admin:morph_webhooks_webhookdelivery_overview"
DELIVERIES = "admin:morph_webhooks_webhookdelivery_changelist"
OUTCOMES = ["processed", "duplicate", "stale", "ignored", "rejected", "failed"]
# Twenty past noon: the current hour (12:00) is partial, the window starts at 13:00 the day before.
NOW = datetime(2025, 3, 6, 12, 20, tzinfo=timezone.utc)


@pytest.fixture
def frozen() -> Iterator[None]:
    # Fixed, so that a test running across the turn of an hour still finds its rows in place.
    with (
        mock.patch("django.utils.timezone.now", return_value=NOW),
        mock.patch("morph_webhooks.health.now", return_value=NOW),
    ):
        yield


def delivery(at: datetime, status: str = Outcome.PROCESSED, **kwargs: Any) -> WebhookDelivery:
    obj = WebhookDeliveryFactory(status=status, **kwargs)
    # received_at is auto_now_add: only an update can set it.
    WebhookDelivery.objects.filter(pk=obj.pk).update(received_at=at)
    obj.refresh_from_db()
    return obj


def overview(client: Client, query: str = "") -> Any:
    response = client.get(f"{reverse(OVERVIEW)}?{query}")
    assert response.status_code == 200
    return response


def table(response: Any) -> list[tuple[str, dict[str, int], int]]:
    """The rows, newest first: local start (and end, for a run of hours without deliveries), the
    counts that are not zero, the total."""
    return [
        (
            f"{localtime(hour.start):%H:%M}" + (f"-{localtime(hour.end):%H:%M}" if hour.end else ""),
            {outcome: count for outcome, count in hour.counts if count},
            hour.total,
        )
        for hour in response.context["hours"]
    ]


def stages(response: Any, kind: str = "open") -> list[tuple[str, list[tuple[str, int, str]]]]:
    [section] = [section for section in response.context["opportunity_sections"] if section.kind == kind]
    return [
        (stage.name, [(t.currency, t.count, t.amount) for t in stage.currencies]) for stage in section.stages
    ]


# Deliveries per hour


@pytest.mark.usefixtures("frozen")
def test_renders_with_no_data(admin_client):
    response = overview(admin_client)

    content = response.content.decode()
    assert "0 deliveries in the last 24 hours" in content
    assert "None: every delivery was accepted." in content
    assert "No open opportunities." in content
    # A day without deliveries is one row, not 24 rows of zeros.
    assert table(response) == [("13:00-13:00", {}, 0)]
    assert "2025-03-05 13:00 – 2025-03-06 13:00" in content and "No deliveries" in content
    assert [t for t in response.templates if t.name == "admin/base_site.html"]


@pytest.mark.usefixtures("frozen")
def test_one_column_per_outcome_from_fine_to_trouble(admin_client):
    columns = [outcome for outcome, _ in overview(admin_client).context["outcomes"]]

    assert sorted(columns) == sorted(Outcome.values)
    assert [c for c in columns if c in OUTCOMES] == OUTCOMES
    assert columns.index("ignored") < columns.index("rejected")


@pytest.mark.usefixtures("frozen")
def test_deliveries_per_hour_by_outcome(admin_client):
    at = datetime(2025, 3, 6, tzinfo=timezone.utc)
    delivery(at.replace(hour=12, minute=5))
    delivery(at.replace(hour=12, minute=19, second=59))
    delivery(at.replace(hour=12, minute=10), Outcome.FAILED, http_status=500)
    delivery(at.replace(hour=10, minute=59, second=59), Outcome.DUPLICATE)
    delivery(at.replace(hour=10), Outcome.REJECTED, http_status=400)
    delivery(at.replace(hour=3, minute=30), Outcome.IGNORED)
    delivery(datetime(2025, 3, 5, 13, tzinfo=timezone.utc), Outcome.STALE)  # the first hour shown
    delivery(datetime(2025, 3, 5, 12, 59, 59, tzinfo=timezone.utc))  # a day and more ago

    response = overview(admin_client)

    rows = table(response)
    # Only hours with deliveries have a row each; the hours between are one row per run.
    assert rows == [
        ("12:00", {"processed": 2, "failed": 1}, 3),
        ("11:00-12:00", {}, 0),
        ("10:00", {"duplicate": 1, "rejected": 1}, 2),
        ("04:00-10:00", {}, 0),
        ("03:00", {"ignored": 1}, 1),
        ("14:00-03:00", {}, 0),
        ("13:00", {"stale": 1}, 1),
    ]
    assert sum(total for *_, total in rows) == 7
    assert {outcome: count for outcome, count in response.context["outcome_totals"] if count} == {
        "processed": 2,
        "duplicate": 1,
        "stale": 1,
        "ignored": 1,
        "rejected": 1,
        "failed": 1,
    }

    content = response.content.decode()
    assert "7 deliveries in the last 24 hours" in content
    assert '<th scope="row">2025-03-06 12:00</th>' in content
    assert '<th scope="row">2025-03-05 13:00</th>' in content
    assert '<td class="morph-count morph-trouble" data-outcome="failed">1</td>' in content
    # The column headers filter the delivery list by that outcome.
    assert f'href="{reverse(DELIVERIES)}?status=failed"' in content
    # The busiest hour's bar is full width; another is in proportion, and no count is invisible.
    assert '<span class="morph-processed morph-w67" title="2 processed">' in content
    assert '<span class="morph-failed morph-w33" title="1 failed">' in content
    assert '<span class="morph-stale morph-w33" title="1 stale">' in content


def test_hours_start_on_the_local_hour(admin_client, settings):
    # India is UTC+5:30: its hours start at half past the UTC hour.
    settings.TIME_ZONE = "Asia/Kolkata"
    with mock.patch("django.utils.timezone.now", return_value=NOW):  # 17:50 IST
        delivery(datetime(2025, 3, 6, 11, 40, tzinfo=timezone.utc))  # 17:10 IST
        delivery(datetime(2025, 3, 6, 11, 29, tzinfo=timezone.utc), Outcome.FAILED)  # 16:59 IST
        delivery(datetime(2025, 3, 5, 12, 29, tzinfo=timezone.utc))  # 17:59 IST yesterday: too old
        rows = table(overview(admin_client))

    assert rows == [("17:00", {"processed": 1}, 1), ("16:00", {"failed": 1}, 1), ("18:00-16:00", {}, 0)]
    assert sum(total for *_, total in rows) == 2


def test_hours_across_a_daylight_saving_change(admin_client, settings):
    # New York moved its clocks from 02:00 to 03:00 on 9 March 2025 (07:00 UTC): the row before
    # 03:00 is 01:00, and each of the 24 rows is still one real hour.
    settings.TIME_ZONE = "America/New_York"
    now = datetime(2025, 3, 9, 9, 20, tzinfo=timezone.utc)  # 05:20 EDT
    with mock.patch("django.utils.timezone.now", return_value=now):
        delivery(datetime(2025, 3, 9, 6, 30, tzinfo=timezone.utc))  # 01:30 EST
        delivery(datetime(2025, 3, 9, 7, 10, tzinfo=timezone.utc), Outcome.FAILED)  # 03:10 EDT
        delivery(datetime(2025, 3, 8, 10, 10, tzinfo=timezone.utc), Outcome.STALE)  # 05:10 EST
        rows = table(overview(admin_client))

    assert rows == [
        ("04:00-06:00", {}, 0),
        ("03:00", {"failed": 1}, 1),
        ("01:00", {"processed": 1}, 1),
        ("06:00-01:00", {}, 0),
        ("05:00", {"stale": 1}, 1),  # the first hour shown
    ]
    assert sum(total for *_, total in rows) == 3


# Latest failures


@pytest.mark.usefixtures("frozen")
def test_latest_failures_link_to_their_deliveries(admin_client):
    delivery(T0, Outcome.PROCESSED, remote_id="opp_fine")
    old = delivery(T0, Outcome.FAILED, http_status=500, remote_id="opp_old")
    failed = delivery(
        T0 + timedelta(hours=1),
        Outcome.FAILED,
        http_status=500,
        remote_id="opp_<b>boom</b>",
        error="Traceback (most recent call last):\n  File ...\nRuntimeError: <receiver> exploded\n\n",
    )
    rejected = delivery(
        T0 + timedelta(hours=2),
        Outcome.REJECTED,
        http_status=400,
        error='{"error": "invalid_event", "fields": {"data.fields.amount": ["A valid number is required."]}}',
    )
    delivery(T0 + timedelta(hours=3), Outcome.DUPLICATE)

    response = overview(admin_client)

    failures = response.context["failures"]
    assert [f.delivery for f in failures] == [rejected, failed, old]
    # A rejection's answer in words, not as escaped JSON.
    assert [f.summary for f in failures] == [
        "Invalid event: data.fields.amount: A valid number is required.",
        "RuntimeError: <receiver> exploded",
        "",
    ]
    content = response.content.decode()
    for obj in (rejected, failed, old):
        url = reverse("admin:morph_webhooks_webhookdelivery_change", args=[obj.pk])
        assert f'<a href="{url}">' in content
    assert "Failed (500)" in content
    assert "Rejected (400)" in content
    # Everything the sender or a traceback wrote is escaped.
    assert "<b>boom" not in content
    assert escape("opp_<b>boom</b>") in content
    assert escape("RuntimeError: <receiver> exploded") in content


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            '{"error": "permission_denied", "detail": "Connector \'x\' is not allowed."}',
            "Permission denied: Connector 'x' is not allowed.",
        ),
        (
            '{"error": "invalid_event", "fields": {"a": ["One."], "b": "Two."}}',
            "Invalid event: a: One.; b: Two.",
        ),
        ('{"error": "unsupported_media_type"}', "Unsupported media type"),
        ('["not", "an", "answer"]', '["not", "an", "answer"]'),
        ('{"error": 3}', '{"error": 3}'),
        ("not JSON {", "not JSON {"),
    ],
)
def test_error_summaries_are_words(error, shown):
    assert error_summary(error) == shown


@pytest.mark.usefixtures("frozen")
def test_latest_failures_are_limited(admin_client):
    # Twenty rows are enough to see whether something is wrong, and keep the page small.
    deliveries = [
        delivery(T0 + timedelta(minutes=i), Outcome.FAILED, http_status=500, error="x" * 5000)
        for i in range(OVERVIEW_FAILURES + 1)
    ]

    failures = overview(admin_client).context["failures"]

    assert [f.delivery for f in failures] == deliveries[:0:-1]
    # Only the end of each error is loaded, and less of it shown.
    assert "error" in failures[0].delivery.get_deferred_fields()
    assert len(failures[0].delivery.error_tail) == 300
    assert failures[0].summary == "x" * 159 + "…"


# Opportunities


@pytest.mark.usefixtures("frozen")
def test_opportunities_by_stage_and_currency(admin_client):
    OpportunityFactory(stage_id="stage_a", currency="EUR", amount=Decimal("100.50"))
    OpportunityFactory(stage_id="stage_a", currency="EUR", amount=Decimal("200"))
    OpportunityFactory(stage_id="stage_a", currency="EUR", amount=None)  # counted, adds nothing
    OpportunityFactory(stage_id="stage_a", currency="USD", amount=Decimal("10"))
    OpportunityFactory(stage_id="stage_b", currency="EUR", amount=Decimal("1000.125"))
    OpportunityFactory(stage_id="stage_b", currency="EUR", amount=Decimal("5000"), deleted_at=T0)  # gone
    OpportunityFactory(stage_id="", currency="", amount=None)

    response = overview(admin_client)

    assert stages(response) == [
        ("stage_a", [("EUR", 3, "300.50 EUR"), ("USD", 1, "10.00 USD")]),
        ("stage_b", [("EUR", 1, "1,000.125 EUR")]),
        ("", [("", 1, "")]),
    ]
    assert [(t.currency, t.count, t.amount) for t in response.context["currency_totals"]] == [
        ("", 1, ""),
        ("EUR", 4, "1,300.625 EUR"),
        ("USD", 1, "10.00 USD"),
    ]
    content = response.content.decode()
    assert "1,300.625 EUR" in content
    assert "(no stage)" in content
    # Each stage links to the opportunity list filtered to it, without deleted opportunities.
    opportunities = reverse("admin:morph_webhooks_opportunity_changelist")
    query = "stage_id=stage_a&amp;connector_id=hubspot&amp;owner_id=tenant_1&amp;deleted=no"
    assert f'<a href="{opportunities}?{query}">stage_a</a>' in content
    listed = admin_client.get(f"{opportunities}?{query}".replace("&amp;", "&"))
    assert listed.status_code == 200
    assert len(listed.context["cl"].result_list) == 4


@pytest.mark.usefixtures("frozen")
def test_opportunities_by_stage_name_open_apart_from_won_and_lost(admin_client, django_assert_num_queries):
    StageFactory(remote_id="s_won", name="Closed won", type=StageType.WON)
    # Another pipeline's stage of the same name.
    StageFactory(remote_id="s_won_2", name="Closed won", type=StageType.WON)
    StageFactory(remote_id="s_lost", name="Closed lost", type=StageType.LOST)
    StageFactory(remote_id="s_demo", name="Demo", type=StageType.OPEN)
    StageFactory(remote_id="s_odd", name="Odd", type=StageType.UNKNOWN)
    # The same id in another tenant is another stage: there it is lost.
    StageFactory(owner_id="tenant_2", remote_id="s_demo", name="Perdu", type=StageType.LOST)
    OpportunityFactory(stage_id="s_won", amount=Decimal("100"))
    OpportunityFactory(stage_id="s_won_2", amount=Decimal("50"))
    OpportunityFactory(stage_id="s_lost", amount=Decimal("10"))
    OpportunityFactory(stage_id="s_demo", amount=Decimal("1"))
    OpportunityFactory(owner_id="tenant_2", stage_id="s_demo", amount=Decimal("2"))
    OpportunityFactory(stage_id="s_odd", amount=Decimal("3"))
    OpportunityFactory(stage_id="s_later", amount=Decimal("4"))  # its stage has not arrived

    with django_assert_num_queries(7):
        response = overview(admin_client, "connector_id=hubspot&owner_id=tenant_1")

    assert stages(response, "open") == [
        ("Demo", [("EUR", 1, "1.00 EUR")]),
        ("Odd", [("EUR", 1, "3.00 EUR")]),
        ("s_later", [("EUR", 1, "4.00 EUR")]),
    ]
    assert stages(response, "WON") == [("Closed won", [("EUR", 2, "150.00 EUR")])]
    assert stages(response, "LOST") == [("Closed lost", [("EUR", 1, "10.00 EUR")])]
    content = response.content.decode()
    assert "Won opportunities by stage · hubspot / tenant_1" in content
    assert "Lost opportunities by stage · hubspot / tenant_1" in content
    opportunities = reverse("admin:morph_webhooks_opportunity_changelist")
    # A name several stages share lists the opportunities of all of them, in this connection.
    link = f"{opportunities}?stage_id__in=s_won%2Cs_won_2&amp;connector_id=hubspot&amp;owner_id=tenant_1&amp;deleted=no"
    assert f'<a href="{link}">Closed won</a>' in content
    listed = admin_client.get(link.replace("&amp;", "&"))
    assert len(listed.context["cl"].result_list) == 2

    response = overview(admin_client, "connector_id=hubspot&owner_id=tenant_2")
    assert stages(response, "open") == []
    assert stages(response, "LOST") == [("Perdu", [("EUR", 1, "2.00 EUR")])]


@pytest.mark.usefixtures("frozen")
def test_opportunities_of_two_tenants_are_never_added_up(admin_client, django_assert_num_queries):
    for owner_id, amount in (("acme", "100"), ("globex", "7")):
        Connection.objects.create(connector_id="hubspot", owner_id=owner_id)
        StageFactory(owner_id=owner_id, remote_id="s_won", name="Closed won", type=StageType.WON)
        OpportunityFactory(owner_id=owner_id, remote_id="opp_1", stage_id="s_won", amount=Decimal(amount))

    # Without a connection chosen, the page offers them and adds nothing up: no query for it.
    with django_assert_num_queries(6):
        response = overview(admin_client)
    content = response.content.decode()
    assert "Closed won" not in content and "107.00" not in content
    assert "Opportunities are counted per connection" in content
    assert '<a href="?connector_id=hubspot&amp;owner_id=acme">hubspot / acme</a>' in content
    assert '<a href="?connector_id=hubspot&amp;owner_id=globex">hubspot / globex</a>' in content

    response = overview(admin_client, "connector_id=hubspot&owner_id=globex")
    assert stages(response, "WON") == [("Closed won", [("EUR", 1, "7.00 EUR")])]
    assert "Won opportunities by stage · hubspot / globex" in response.content.decode()

    # A connector alone holding both: still never added up.
    response = overview(admin_client, "connector_id=hubspot")
    assert "107.00" not in response.content.decode()
    assert "Opportunities are counted per connection" in response.content.decode()

    # With one connection, it is shown as it is, saying whose.
    Connection.objects.filter(owner_id="globex").delete()
    Opportunity.objects.filter(owner_id="globex").delete()
    response = overview(admin_client)
    assert stages(response, "WON") == [("Closed won", [("EUR", 1, "100.00 EUR")])]
    assert "Won opportunities by stage · hubspot / acme" in response.content.decode()


@pytest.mark.usefixtures("frozen")
def test_stage_ids_are_escaped(admin_client):
    OpportunityFactory(stage_id="<script>alert(1)</script>&x", currency="EUR")

    content = overview(admin_client).content.decode()

    assert "<script>alert" not in content
    assert ">&lt;script&gt;alert(1)&lt;/script&gt;&amp;x</a>" in content
    assert "?stage_id=%3Cscript%3Ealert%281%29%3C%2Fscript%3E%26x&amp;connector_id=" in content


# Connections


def connections(response: Any) -> list[tuple[str, str, int, str, bool]]:
    return [
        (
            f"{row.connector_id}/{row.owner_id}",
            row.last_event_at and f"{localtime(row.last_event_at):%Y-%m-%d %H:%M}",
            row.failures,
            row.silence_after,
            row.silent,
        )
        for row in response.context["connections"]
    ]


@pytest.mark.usefixtures("frozen")
def test_each_connection_with_its_last_event_failures_and_silence(admin_client, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "SILENCE_OVERRIDES": {"hubspot/tenant_7": 604800}}
    for owner in ("tenant_1", "quiet", "tenant_7", "new"):
        Connection.objects.create(connector_id="hubspot", owner_id=owner)
    delivery(NOW - timedelta(hours=2), owner_id="tenant_1")
    delivery(NOW - timedelta(hours=3), Outcome.FAILED, http_status=500, owner_id="tenant_1")
    delivery(NOW - timedelta(hours=4), Outcome.DEAD, owner_id="tenant_1")
    delivery(NOW - timedelta(hours=5), Outcome.REJECTED, http_status=400, owner_id="tenant_1")  # the sender's
    delivery(
        NOW - timedelta(hours=30), Outcome.FAILED, http_status=500, owner_id="tenant_1"
    )  # before the day
    delivery(NOW - timedelta(days=3), owner_id="quiet")
    delivery(NOW - timedelta(days=3), owner_id="tenant_7")  # a quiet tenant, with its own threshold
    # Failures logged before failed events registered their connection: not registered.
    delivery(
        NOW - timedelta(hours=1), Outcome.FAILED, http_status=500, connector_id="pipedrive", owner_id="t9"
    )

    response = overview(admin_client)

    # Silent first, then the most failures.
    assert connections(response) == [
        ("hubspot/quiet", "2025-03-03 12:20", 0, "1 day", True),
        ("hubspot/tenant_1", "2025-03-06 10:20", 2, "1 day", False),
        ("pipedrive/t9", None, 1, "1 day", False),
        ("hubspot/new", None, 0, "1 day", False),
        ("hubspot/tenant_7", "2025-03-03 12:20", 0, "7 days", False),
    ]
    # The failures are those the table of hours counts.
    totals = dict(response.context["outcome_totals"])
    assert sum(row.failures for row in response.context["connections"]) == totals["failed"] + totals["dead"]
    # The health check finds the same connection silent.
    silent = health.silent_connections()
    assert silent.status == health.Status.WARNING and "1 connection silent: hubspot / quiet" in silent.detail
    content = response.content.decode()
    assert "5 connections, 1 silent, 2 with failures" in content
    assert "Silent: no event for longer than its threshold" in content
    assert (
        "Not registered: add it under Connections to watch and sync it" in content
        and "No events yet" in content
    )
    deliveries = reverse(DELIVERIES)
    assert f'<a href="{deliveries}?connector_id=hubspot&amp;owner_id=quiet">hubspot / quiet</a>' in content
    assert f'<a href="{reverse("admin:morph_webhooks_connection_changelist")}">All connections</a>' in content
    listed = admin_client.get(f"{deliveries}?connector_id=hubspot&owner_id=tenant_1")
    assert len(listed.context["cl"].result_list) == 5


@pytest.mark.usefixtures("frozen")
@pytest.mark.parametrize(
    ("silent_for", "silent"), [(timedelta(days=1), False), (timedelta(days=1, seconds=1), True)]
)
def test_silent_once_past_the_threshold(admin_client, silent_for, silent):
    Connection.objects.create(connector_id="hubspot", owner_id="tenant_1")
    delivery(NOW - silent_for)

    [row] = overview(admin_client).context["connections"]

    assert row.silent is silent
    assert (health.silent_connections().status == health.Status.WARNING) is silent


@pytest.mark.usefixtures("frozen")
def test_no_silence_check_when_the_threshold_is_zero(admin_client, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "SILENCE_THRESHOLD": 0}
    Connection.objects.create(connector_id="hubspot", owner_id="tenant_1")
    delivery(NOW - timedelta(days=30))

    [row] = overview(admin_client).context["connections"]

    assert (row.silent, row.silence_after) == (False, "never")


@pytest.mark.usefixtures("frozen")
def test_connections_beyond_the_limit_are_counted(admin_client, monkeypatch):
    monkeypatch.setattr("morph_webhooks.admin.deliveries.OVERVIEW_CONNECTIONS", 2)
    for owner in ("a", "b", "c"):
        Connection.objects.create(connector_id="hubspot", owner_id=owner)
    delivery(NOW - timedelta(days=2), owner_id="c")  # silent: listed first

    response = overview(admin_client)

    assert [row.owner_id for row in response.context["connections"]] == ["c", "a"]
    assert "and 1 more connection, silent or failing ones listed first." in response.content.decode()


@pytest.mark.usefixtures("frozen")
def test_connection_names_are_escaped(admin_client):
    Connection.objects.create(connector_id="hubspot", owner_id="<script>x</script>")

    content = overview(admin_client).content.decode()

    assert "<script>x" not in content and "hubspot / &lt;script&gt;x&lt;/script&gt;" in content


@pytest.mark.usefixtures("frozen")
def test_no_connections_yet(admin_client):
    assert (
        "No connection yet: each registers with its first event." in overview(admin_client).content.decode()
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86400, "1 day"),
        (604800, "7 days"),
        (7200, "2 hours"),
        (90, "90 s"),
        (300, "5 minutes"),
        (0.5, "0.5 s"),
    ],
)
def test_thresholds_are_shown_in_their_unit(seconds, text):
    assert duration_text(seconds) == text


# Access


@pytest.mark.usefixtures("frozen")
def test_staff_without_view_permission_is_refused(client, staff):
    grant(staff, "view_opportunity")

    assert client.get(reverse(OVERVIEW)).status_code == 403


@pytest.mark.usefixtures("frozen")
def test_anonymous_and_non_staff_are_sent_to_log_in(client, django_user_model):
    response = client.get(reverse(OVERVIEW))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))

    user = django_user_model.objects.create_user("someone", password=None)
    grant(user, "view_webhookdelivery")
    client.force_login(user)
    response = client.get(reverse(OVERVIEW))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.usefixtures("frozen")
def test_the_link_to_all_connections_needs_their_view_permission(client, staff):
    Connection.objects.create(connector_id="hubspot", owner_id="tenant_1")
    grant(staff, "view_webhookdelivery")
    link = f'href="{reverse("admin:morph_webhooks_connection_changelist")}"'

    response = overview(client)
    assert "hubspot / tenant_1" in response.content.decode()
    assert link not in response.content.decode()

    grant(staff, "view_connection")
    assert link in overview(client).content.decode()


@pytest.mark.usefixtures("frozen")
def test_opportunities_need_their_own_view_permission(client, staff):
    OpportunityFactory(stage_id="stage_secret", amount=Decimal("999"))
    delivery(NOW, Outcome.FAILED, http_status=500)
    grant(staff, "view_webhookdelivery")

    response = overview(client)
    assert not response.context["show_opportunities"]
    content = response.content.decode()
    assert "stage_secret" not in content
    assert "Open opportunities by stage" not in content
    assert "1 delivery in the last 24 hours" in content

    grant(staff, "view_opportunity")
    response = overview(client)
    assert response.context["show_opportunities"]
    assert "999.00 EUR" in response.content.decode()


@pytest.mark.usefixtures("frozen")
def test_linked_from_the_delivery_list(admin_client, client, staff):
    url = reverse(OVERVIEW)

    assert f'<a href="{url}">Overview</a>' in admin_client.get(reverse(DELIVERIES)).content.decode()
    grant(staff, "view_webhookdelivery")
    assert f'<a href="{url}">Overview</a>' in client.get(reverse(DELIVERIES)).content.decode()


@pytest.mark.usefixtures("frozen")
def test_works_on_a_site_without_the_opportunity_admin(rf, admin_user):
    site = admin.AdminSite(name="deliveries_only")
    site.register(WebhookDelivery, WebhookDeliveryAdmin)
    delivery(NOW, Outcome.FAILED, http_status=500)
    request = rf.get("/")
    request.user = admin_user

    response = site.get_model_admin(WebhookDelivery).overview_view(request)

    assert not response.context_data["show_opportunities"]
    assert "1 delivery in the last 24 hours" in response.render().content.decode()


def test_registered_before_the_change_view():
    # "overview/" would otherwise be read as the primary key of a delivery.
    urls = admin.site.get_model_admin(WebhookDelivery).get_urls()
    assert isinstance(admin.site.get_model_admin(WebhookDelivery), WebhookDeliveryAdmin)
    assert urls[0].name == "morph_webhooks_webhookdelivery_overview"


# Cost


def fill(hours: int, per_hour: int, opportunities: int) -> None:
    for hour in range(hours):
        for i in range(per_hour):
            delivery(
                NOW - timedelta(hours=hour, minutes=i),
                OUTCOMES[i % len(OUTCOMES)],
                http_status=200,
                # Spread over as many connections as there are deliveries an hour.
                owner_id=f"tenant_{i}",
            )
    for i in range(per_hour):
        Connection.objects.create(connector_id="hubspot", owner_id=f"tenant_{i}")
    for i in range(opportunities):
        OpportunityFactory(stage_id=f"stage_{i % 4}", currency=["EUR", "USD", "GBP"][i % 3])


@pytest.mark.usefixtures("frozen")
@pytest.mark.parametrize(
    ("hours", "per_hour", "opportunities"), [(0, 0, 0), (1, 1, 1), (24, 6, 30), (2, 60, 0)]
)
def test_query_count_does_not_grow_with_the_data(
    admin_client, django_assert_num_queries, hours, per_hour, opportunities
):
    fill(hours, per_hour, opportunities)

    # The session, the user, the hourly counts, the connections' failures, the connections with
    # their last event, the latest failures, the opportunities of the connection chosen.
    with django_assert_num_queries(7):
        response = overview(admin_client, "connector_id=hubspot&owner_id=tenant_1")
    assert response.context["connections_total"] == per_hour


@pytest.mark.usefixtures("frozen")
@pytest.mark.parametrize(("hours", "per_hour", "opportunities"), [(0, 0, 0), (24, 6, 30), (2, 60, 0)])
def test_query_count_for_staff(client, staff, django_assert_num_queries, hours, per_hour, opportunities):
    grant(staff, "view_webhookdelivery", "view_opportunity", "view_connection")
    fill(hours, per_hour, opportunities)

    # As for a superuser, plus the user's and their groups' permissions, loaded once.
    with django_assert_num_queries(9):
        overview(client, "connector_id=hubspot&owner_id=tenant_1")


@pytest.mark.usefixtures("frozen")
def test_styles_keep_to_a_strict_content_security_policy(admin_client, settings):
    csp = pytest.importorskip("django.utils.csp", reason="Content Security Policy support is Django 6.0+")
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.csp.ContentSecurityPolicyMiddleware"]
    settings.SECURE_CSP = {"style-src": [csp.CSP.SELF, csp.CSP.NONCE]}
    settings.TEMPLATES = [
        {
            **settings.TEMPLATES[0],
            "OPTIONS": {
                **settings.TEMPLATES[0]["OPTIONS"],
                "context_processors": [
                    *settings.TEMPLATES[0]["OPTIONS"]["context_processors"],
                    "django.template.context_processors.csp",
                ],
            },
        }
    ]
    delivery(NOW, Outcome.FAILED, http_status=500)

    response = overview(admin_client)

    content = response.content.decode()
    # No style attributes, which the policy would drop; the style element carries the nonce.
    assert " style=" not in content
    [nonce] = [part for part in response["Content-Security-Policy"].split() if part.startswith("'nonce-")]
    assert f'<style nonce="{nonce[7:-1]}">' in content
    assert '<span class="morph-failed morph-w100" title="1 failed">' in content
