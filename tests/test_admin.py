from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import constants
from django.db import connection
from django.db.models import Model
from django.forms.models import model_to_dict
from django.templatetags.static import static
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import strip_tags

from morph_webhooks.admin.deliveries import HTTPStatusFilter
from morph_webhooks.admin.resources import FILTER_CHOICES
from morph_webhooks.models import IdempotencyKey, Opportunity, Outcome, Stage, StageType, WebhookDelivery
from morph_webhooks.processing import Result
from morph_webhooks.reprocess import reprocess_delivery
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing import morph_headers, opportunity_event, post_event
from morph_webhooks.testing.factories import REMOTE_TIMESTAMP as T0
from morph_webhooks.testing.factories import (
    CrmUserFactory,
    IdempotencyKeyFactory,
    OpportunityFactory,
    PipelineFactory,
    StageFactory,
    WebhookDeliveryFactory,
)

pytestmark = pytest.mark.django_db

OPPORTUNITIES = "admin:morph_webhooks_opportunity_changelist"
KEYS = "admin:morph_webhooks_idempotencykey_changelist"
DELIVERIES = "admin:morph_webhooks_webhookdelivery_changelist"
FACTORIES = [OpportunityFactory, IdempotencyKeyFactory, WebhookDeliveryFactory]


def admin_url(obj: Model, view: str) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[obj.pk])


def listed(client: Client, changelist: str, query: str = "") -> list[Any]:
    response = client.get(f"{reverse(changelist)}?{query}")
    assert response.status_code == 200
    # A filter value the admin does not understand redirects with ?e=1 instead of filtering.
    assert "e=1" not in response.request["QUERY_STRING"]
    return list(response.context["cl"].result_list)


def filter_titles(client: Client, changelist: str) -> list[str]:
    return [str(spec.title) for spec in client.get(reverse(changelist)).context["cl"].filter_specs]


def reprocess(client: Client, *deliveries: WebhookDelivery) -> Any:
    return client.post(
        reverse(DELIVERIES),
        {"action": "reprocess", "index": 0, "_selected_action": [d.pk for d in deliveries]},
        follow=True,
    )


def messages_of(response: Any) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in response.context["messages"]]


def action_names(response: Any) -> list[str]:
    form = response.context["action_form"]
    return [] if form is None else [name for name, _ in form.fields["action"].choices if name]


@pytest.fixture
def admin_user(django_user_model):
    # pytest-django's admin gets a hashed password; hashing costs more than most tests here.
    return django_user_model.objects.create_superuser("admin", "admin@example.com", None)


# Pages


@pytest.mark.parametrize("factory", FACTORIES)
def test_changelist_and_change_view_render(admin_client, factory):
    first, second = factory(), factory()

    response = admin_client.get(reverse(f"admin:morph_webhooks_{first._meta.model_name}_changelist"))
    assert response.status_code == 200
    assert {row.pk for row in response.context["cl"].result_list} == {first.pk, second.pk}
    assert str(first) in response.content.decode()

    response = admin_client.get(admin_url(first, "change"))
    assert response.status_code == 200
    assert response.context["original"] == first
    assert str(first) in response.content.decode()


@pytest.mark.parametrize("factory", FACTORIES)
def test_read_only(admin_client, factory):
    obj = factory()
    before = model_to_dict(obj)

    assert admin_client.get(reverse(f"admin:morph_webhooks_{obj._meta.model_name}_add")).status_code == 403
    change = admin_client.get(admin_url(obj, "change"))
    assert 'name="_save"' not in change.content.decode()
    changed = {"name": "x", "key": "x", "remote_id": "x", "status": "failed"}
    assert admin_client.post(admin_url(obj, "change"), changed).status_code == 403
    assert admin_client.post(admin_url(obj, "delete"), {"post": "yes"}).status_code == 403

    obj.refresh_from_db()
    assert model_to_dict(obj) == before
    changelist = admin_client.get(reverse(f"admin:morph_webhooks_{obj._meta.model_name}_changelist"))
    assert "delete_selected" not in action_names(changelist)


# Opportunity


def test_opportunity_columns(admin_client):
    OpportunityFactory(name="Big", amount=Decimal("12500"), currency="EUR")
    OpportunityFactory(name="Precise", amount=Decimal("0.125"), currency="USD")
    OpportunityFactory(name="Unpriced", amount=None, currency="")  # must not break the page
    OpportunityFactory(name="Gone", deleted_at=T0)

    content = admin_client.get(reverse(OPPORTUNITIES)).content.decode()

    assert "12,500.00 EUR" in content
    assert "0.125 USD" in content
    # A deleted row says so in red; the others show the one empty value, never a green check.
    assert content.count('class="morph-deleted"') == 1
    assert 'alt="True"' not in content and 'alt="False"' not in content


def test_opportunity_ordering_is_latest_update_first(admin_client):
    old = OpportunityFactory(remote_updated_at=T0)
    new = OpportunityFactory(remote_updated_at=T0 + timedelta(days=1))

    assert listed(admin_client, OPPORTUNITIES) == [new, old]


def test_opportunity_filters_and_search(admin_client):
    won = OpportunityFactory(name="Won deal", stage_id="stage_won", remote_id="opp_won")
    open_ = OpportunityFactory(name="Open deal", connector_id="pipedrive", pipeline_id="pipeline_b")
    gone = OpportunityFactory(name="Gone deal", deleted_at=T0)
    StageFactory(remote_id="stage_won", name="Closed won", type=StageType.WON)
    PipelineFactory(remote_id="pipeline_b", name="Enterprise")

    assert filter_titles(admin_client, OPPORTUNITIES) == ["connector id", "stage", "pipeline", "deleted"]

    assert listed(admin_client, OPPORTUNITIES, "stage_id=stage_won") == [won]
    assert listed(admin_client, OPPORTUNITIES, "connector_id=pipedrive") == [open_]
    assert listed(admin_client, OPPORTUNITIES, "pipeline_id=pipeline_b") == [open_]
    assert listed(admin_client, OPPORTUNITIES, "deleted=yes") == [gone]
    assert set(listed(admin_client, OPPORTUNITIES, "deleted=no")) == {won, open_}
    assert listed(admin_client, OPPORTUNITIES, "q=open") == [open_]
    assert listed(admin_client, OPPORTUNITIES, "q=opp_won") == [won]
    # Remote ids match exactly, as their index does: a prefix or another case finds nothing.
    assert listed(admin_client, OPPORTUNITIES, "q=opp_wo") == []
    assert listed(admin_client, OPPORTUNITIES, "q=OPP_WON") == []


def opportunity_admin() -> Any:
    return admin.site.get_model_admin(Opportunity)


def cells(response: Any, *columns: str) -> list[tuple[str, ...]]:
    """What each listed row shows in ``columns`` (display methods of the opportunity admin)."""
    model_admin = response.context["cl"].model_admin
    return [
        tuple(strip_tags(str(getattr(model_admin, column)(row))) for column in columns)
        for row in response.context["cl"].result_list
    ]


def test_opportunity_list_shows_names_not_ids(admin_client):
    StageFactory(remote_id="stage_won", name="Closed won", type=StageType.WON)
    PipelineFactory(remote_id="pipeline_sales", name="Sales")
    CrmUserFactory(remote_id="user_42", first_name="Ada", last_name="Lovelace")
    OpportunityFactory(name="Known", stage_id="stage_won", remote_updated_at=T0 + timedelta(hours=1))
    # Its stage, pipeline and owner have not arrived yet: their ids are all there is to show.
    OpportunityFactory(name="Early", stage_id="stage_new", pipeline_id="pipeline_new", crm_owner_id="user_7")
    OpportunityFactory(
        name="Unowned",
        stage_id="",
        pipeline_id="",
        crm_owner_id="",
        remote_updated_at=T0 - timedelta(hours=1),
    )

    response = admin_client.get(reverse(OPPORTUNITIES))

    assert cells(response, "stage", "pipeline", "crm_owner") == [
        ("Closed won (won)", "Sales", "Ada Lovelace"),
        ("stage_new", "pipeline_new", "user_7"),
        ("—", "—", "—"),
    ]
    content = response.content.decode()
    for header in ("Stage", "Pipeline", "Owner", "Connection", "Updated"):
        assert f">{header}</a>" in content or f">{header}</span>" in content
    assert "Stage id" not in content and "Crm owner id" not in content
    # Names only in the list (the change page links them): one link per row, to the row.
    assert reverse("admin:morph_webhooks_stage_change", args=[Stage.objects.get().pk]) not in content


def test_tenants_never_see_each_others_names(admin_client):
    StageFactory(owner_id="tenant_1", remote_id="stage_1", name="Won by one", type=StageType.WON)
    StageFactory(owner_id="tenant_2", remote_id="stage_1", name="Lost by two", type=StageType.LOST)
    StageFactory(connector_id="pipedrive", owner_id="tenant_1", remote_id="stage_1", name="Pipedrive's")
    one = OpportunityFactory(
        owner_id="tenant_1", stage_id="stage_1", remote_updated_at=T0 + timedelta(hours=2)
    )
    two = OpportunityFactory(
        owner_id="tenant_2", stage_id="stage_1", remote_updated_at=T0 + timedelta(hours=1)
    )
    three = OpportunityFactory(owner_id="tenant_3", stage_id="stage_1")

    response = admin_client.get(reverse(OPPORTUNITIES))

    assert cells(response, "stage") == [("Won by one (won)",), ("Lost by two (lost)",), ("stage_1",)]
    content = admin_client.get(admin_url(one, "change")).content.decode()
    assert "Won by one" in content and "Lost by two" not in content and "Pipedrive's" not in content
    content = admin_client.get(admin_url(two, "change")).content.decode()
    assert "Lost by two" in content and "Won by one" not in content
    content = admin_client.get(admin_url(three, "change")).content.decode()
    assert "stage_1" in content and "Won by one" not in content and "Lost by two" not in content


def fill_page(opportunities: int) -> None:
    for tenant in ("tenant_1", "tenant_2"):
        StageFactory(owner_id=tenant, remote_id="stage_qualified")
        PipelineFactory(owner_id=tenant)
        CrmUserFactory(owner_id=tenant)
    for i in range(opportunities):
        OpportunityFactory(owner_id=f"tenant_{i % 2 + 1}", stage_id=["stage_qualified", f"stage_{i}"][i % 2])


@pytest.mark.parametrize("opportunities", [2, 40])
def test_opportunity_list_queries_do_not_grow_with_the_page(
    admin_client, django_assert_num_queries, opportunities
):
    fill_page(opportunities)

    # The session, the user, the count, the page; the connector, stage and pipeline filters'
    # choices; the stages, pipelines and owners of the page's rows, one query each.
    with django_assert_num_queries(10):
        response = admin_client.get(reverse(OPPORTUNITIES))
    assert len(response.context["cl"].result_list) == opportunities


def test_filters_name_stages_and_pipelines(admin_client):
    StageFactory(remote_id="stage_won", name="Closed won", type=StageType.WON)
    StageFactory(owner_id="tenant_2", remote_id="stage_won", name="Gagné", type=StageType.WON)
    StageFactory(remote_id="stage_gone", name="Old", deleted_at=T0)
    PipelineFactory(remote_id="pipeline_sales", name="Sales")
    won = OpportunityFactory(stage_id="stage_won")
    OpportunityFactory(stage_id="stage_other")

    response = admin_client.get(reverse(OPPORTUNITIES))

    choices = {
        str(spec.title): [choice["display"] for choice in spec.choices(response.context["cl"])][1:]
        for spec in response.context["cl"].filter_specs
    }
    # One choice per Morph id, naming it in every tenant that has it; deleted stages are not offered.
    assert choices["stage"] == ["Closed won (won) / Gagné (won)"]
    assert choices["pipeline"] == ["Sales"]
    assert listed(admin_client, OPPORTUNITIES, "stage_id=stage_won") == [won]


def test_filter_choices_are_bounded(admin_client, django_assert_max_num_queries):
    Stage.objects.bulk_create(
        Stage(
            connector_id="hubspot",
            owner_id="tenant_1",
            remote_id=f"s{i:03}",
            name=f"S{i:03}",
            remote_created_at=T0,
            remote_updated_at=T0,
        )
        for i in range(FILTER_CHOICES + 5)
    )

    response = admin_client.get(reverse(OPPORTUNITIES))

    [stages] = [spec for spec in response.context["cl"].filter_specs if str(spec.title) == "stage"]
    assert len(stages.lookup_choices) == FILTER_CHOICES


def test_opportunity_change_page_speaks_sales(admin_client):
    StageFactory(remote_id="stage_won", name="Closed won", type=StageType.WON)
    CrmUserFactory(remote_id="user_42", first_name="Ada", last_name="Lovelace")
    opportunity = OpportunityFactory(
        stage_id="stage_won",
        amount=Decimal("91000"),
        currency="USD",
        contact_ids=["contact_1"],
        company_ids=[],
        raw_resource=None,
    )

    content = admin_client.get(admin_url(opportunity, "change")).content.decode()

    assert "91,000.00 USD" in content
    assert "91000.000000" not in content
    stage = reverse("admin:morph_webhooks_stage_change", args=[Stage.objects.get().pk])
    assert f'<a href="{stage}">Closed won (won)</a>' in content
    assert "Ada Lovelace" in content
    assert "pipeline_sales" in content  # not arrived: its id
    assert "contact_1" in content
    for label in ("Stage", "Pipeline", "Owner", "Amount", "Morph id", "Connector", "Connection owner"):
        assert f">{label}:</label>" in content
    for label in ("Stage id", "Crm owner id", "Remote id", "Pipeline id"):
        assert label not in content
    # One way to show an empty value, never "None".
    assert ">None<" not in content
    assert '<div class="readonly">—</div>' in content
    # The row's deliveries, by its Morph id in its connection.
    deliveries = reverse(DELIVERIES)
    query = f"remote_id={opportunity.remote_id}&amp;connector_id=hubspot&amp;owner_id=tenant_1"
    assert f'href="{deliveries}?{query}"' in content


def test_a_deleted_row_is_marked_deleted(admin_client):
    gone = OpportunityFactory(deleted_at=T0)
    alive = OpportunityFactory()

    content = admin_client.get(admin_url(gone, "change")).content.decode()
    cross = static("admin/img/icon-no.svg")
    assert f'<img src="{cross}" alt=""> Deleted {T0:%Y-%m-%d %H:%M:%S}</span>' in content
    content = admin_client.get(admin_url(alive, "change")).content.decode()
    assert "morph-deleted" not in content and 'alt="True"' not in content and 'alt="False"' not in content


def test_related_models_show_names_too(admin_client):
    PipelineFactory(remote_id="pipeline_sales", name="Sales", stage_ids=["stage_qualified", "stage_x"])
    StageFactory(remote_id="stage_qualified", name="Qualified", pipeline_id="pipeline_sales")

    content = admin_client.get(reverse("admin:morph_webhooks_stage_changelist")).content.decode()
    assert "Sales" in content and ">Pipeline<" in content.replace("</a>", "<")
    pipeline = admin.site.get_model_admin(Stage)
    assert "pipeline" in [
        str(spec.title)
        for spec in admin_client.get(reverse("admin:morph_webhooks_stage_changelist"))
        .context["cl"]
        .filter_specs
    ]
    assert pipeline.search_help_text
    from morph_webhooks.models import Pipeline

    content = admin_client.get(admin_url(Pipeline.objects.get(), "change")).content.decode()
    assert "Qualified (open)</a>, stage_x" in content


def test_opportunity_json_is_pretty_and_escaped(admin_client):
    opportunity = OpportunityFactory(
        name="<script>alert('name')</script>",
        raw_resource={"name": "<script>alert(1)</script>", "city": "Zürich"},
        extra_fields={"custom": "<b>bold</b>"},
        warnings=[{"code": "w1"}],
    )

    content = admin_client.get(admin_url(opportunity, "change")).content.decode()

    assert "<script>alert" not in content
    assert "<b>bold" not in content
    raw = "{\n  &quot;city&quot;: &quot;Zürich&quot;,\n  &quot;name&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;\n}"
    assert f"<pre>{raw}</pre>" in content
    assert "<pre>{\n  &quot;custom&quot;: &quot;&lt;b&gt;bold&lt;/b&gt;&quot;\n}</pre>" in content
    assert "<pre>[\n  {\n    &quot;code&quot;: &quot;w1&quot;\n  }\n]</pre>" in content
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in content


# Idempotency keys


def test_idempotency_key_filter_and_search(admin_client):
    processed = IdempotencyKeyFactory(key="k-processed", remote_id="opp_a")
    stale = IdempotencyKeyFactory(key="k-stale", remote_id="opp_b", outcome=Outcome.STALE)

    assert filter_titles(admin_client, KEYS) == ["outcome"]

    assert listed(admin_client, KEYS, "outcome=stale") == [stale]
    assert listed(admin_client, KEYS, "q=k-processed") == [processed]
    # By key only: remote_id has no index on this table (the deliveries list searches it).
    assert listed(admin_client, KEYS, "q=opp_b") == []


# Deliveries


def test_delivery_filters_and_search(admin_client):
    ok = WebhookDeliveryFactory(idempotency_key="key-ok", remote_id="opp_ok")
    bad = WebhookDeliveryFactory(status=Outcome.REJECTED, http_status=400, idempotency_key="key-bad")

    assert filter_titles(admin_client, DELIVERIES) == ["status", "HTTP status"]

    assert listed(admin_client, DELIVERIES, "status=rejected") == [bad]
    assert listed(admin_client, DELIVERIES, "http_status=200") == [ok]
    assert listed(admin_client, DELIVERIES, "http_status=400") == [bad]
    assert listed(admin_client, DELIVERIES, "q=key-bad") == [bad]
    assert listed(admin_client, DELIVERIES, "q=opp_ok") == [ok]
    assert listed(admin_client, DELIVERIES, "q=KEY-BAD") == []


def test_the_http_status_filter_lists_every_status_the_endpoint_records(client, settings):
    settings.MORPH_WEBHOOKS = {
        **settings.MORPH_WEBHOOKS,
        "ALLOWED_CONNECTORS": ["hubspot"],
        "MAX_BODY_SIZE": 5000,
    }

    def broken(**kwargs: Any) -> None:
        raise ValueError("receiver bug")

    post_event(client, opportunity_event())  # 200
    post_event(client, {"event": "crmOpportunity::created"})  # 400
    post_event(client, opportunity_event(), headers={"x-conector-id": "pipedrive"})  # 403
    post_event(client, opportunity_event(name="x" * 5000))  # 413
    bearer = {"Authorization": f"Bearer {settings.MORPH_WEBHOOKS['SECRETS'][0]}"}
    client.post(
        reverse("morph_webhooks:receive"), "{}", "text/plain", headers={**morph_headers(), **bearer}
    )  # 415
    opportunity_created.connect(broken)
    try:
        post_event(client, opportunity_event("created", "opp_2"))  # 500
    finally:
        opportunity_created.disconnect(broken)

    recorded = set(WebhookDelivery.objects.values_list("http_status", flat=True))
    assert recorded == {200, 400, 403, 413, 415, 500}
    assert recorded <= set(HTTPStatusFilter.STATUSES)


def test_delivery_links_to_the_row_it_changed_and_back(admin_client):
    opportunity = OpportunityFactory(remote_id="opp_1")
    delivery = WebhookDeliveryFactory(remote_id="opp_1", idempotency_key="k" * 40)
    elsewhere = WebhookDeliveryFactory(remote_id="opp_1", owner_id="tenant_2")
    unknown = WebhookDeliveryFactory(remote_id="opp_missing")

    content = admin_client.get(reverse(DELIVERIES)).content.decode()
    opportunities = reverse(OPPORTUNITIES)
    exact = "remote_id=opp_1&connector_id=hubspot&owner_id=tenant_1"
    assert f'<a href="{opportunities}?{exact.replace("&", "&amp;")}">opp_1</a>' in content
    # The row, by model, connector, owner and Morph id: another tenant's opp_1 is not it.
    assert listed(admin_client, OPPORTUNITIES, exact) == [opportunity]
    assert listed(admin_client, OPPORTUNITIES, "remote_id=opp_1&connector_id=hubspot&owner_id=tenant_2") == []
    # A long idempotency key is cut short in the list, whole in its tooltip.
    assert f'<span title="{"k" * 40}">{"k" * 15}…</span>' in content

    content = admin_client.get(admin_url(delivery, "change")).content.decode()
    assert f'<a href="{admin_url(opportunity, "change")}">{opportunity} (opportunity)</a>' in content
    assert "Not stored" in admin_client.get(admin_url(elsewhere, "change")).content.decode()
    assert "Not stored" in admin_client.get(admin_url(unknown, "change")).content.decode()
    # ...and back: the row's deliveries.
    assert listed(admin_client, DELIVERIES, exact) == [delivery]


def test_delivery_labels_times_and_search_help(admin_client):
    delivery = WebhookDeliveryFactory(status=Outcome.REJECTED, http_status=400)

    content = admin_client.get(reverse(DELIVERIES)).content.decode()
    assert "An idempotency key or a Morph id, matched exactly (case matters)." in content
    assert "Rejected (400)" in content
    # Received times to the second: deliveries of one minute stay apart.
    received = delivery.received_at.strftime("%Y-%m-%d %H:%M:%S")
    assert f">{received}</a>" in content

    content = admin_client.get(admin_url(delivery, "change")).content.decode()
    for label in ("HTTP status", "Received", "Morph id", "Connector", "Connection owner"):
        assert f">{label}:</label>" in content
    assert "Http status" not in content
    assert f'<div class="readonly">{received}</div>' in content
    assert ">None<" not in content


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            opportunity_event("created", "opp_bad", fields={"amount": "lots"}),
            ("crmOpportunity::created", "opp_bad"),
        ),
        ({"event": "crmOpportunity::created", "data": {"id": 7}}, ("crmOpportunity::created", "")),
        ({"event": ["x"], "data": "opp"}, ("", "")),
        ([1, 2], ("", "")),
        (b"{not json", ("", "")),
    ],
    ids=["invalid_field", "id_not_a_string", "neither_a_string", "not_an_object", "not_json"],
)
def test_a_rejected_delivery_keeps_what_its_body_named(admin_client, client, body, named):
    assert post_event(client, body).status_code == 400
    delivery = WebhookDelivery.objects.get()

    assert (delivery.event, delivery.remote_id) == named
    if named[1]:
        assert listed(admin_client, DELIVERIES, f"q={named[1]}") == [delivery]


def test_delivery_list_does_not_scan_the_log_for_its_filters(admin_client):
    WebhookDeliveryFactory(status=Outcome.REJECTED, http_status=415)

    with CaptureQueriesContext(connection) as captured:
        content = admin_client.get(reverse(DELIVERIES)).content.decode()

    # The choices are fixed: no SELECT DISTINCT over every delivery to build them.
    assert not [query["sql"] for query in captured.captured_queries if "DISTINCT" in query["sql"].upper()]
    assert "415 Unsupported Media Type" in content and "503 Service Unavailable" in content
    # An unknown value filters nothing rather than failing.
    assert len(listed(admin_client, DELIVERIES, "http_status=abc")) == 1


def test_delivery_list_leaves_bodies_unloaded(admin_client):
    WebhookDeliveryFactory()

    [row] = listed(admin_client, DELIVERIES)

    assert {"body", "headers", "error"} <= row.get_deferred_fields()


def test_delivery_body_headers_and_error_are_pretty_and_escaped(admin_client):
    delivery = WebhookDeliveryFactory(
        payload=opportunity_event(fields={"name": "<script>alert(1)</script>"}),
        idempotency_key="<i>key</i>",
        status=Outcome.FAILED,
        http_status=500,
        error="Traceback (most recent call last):\n  <boom>",
    )

    content = admin_client.get(admin_url(delivery, "change")).content.decode()

    assert "<script>" not in content
    assert "<i>key" not in content
    assert "  &quot;event&quot;: &quot;crmOpportunity::created&quot;" in content
    assert "&quot;name&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in content
    assert "  &quot;x-idempotency-key&quot;: &quot;&lt;i&gt;key&lt;/i&gt;&quot;" in content
    assert "<pre>Traceback (most recent call last):\n  &lt;boom&gt;</pre>" in content


def test_delivery_headers_never_show_a_signature_or_the_secret(admin_client, settings):
    # As rows stored before the request log masked them hold them.
    delivery = WebhookDeliveryFactory()
    secret = settings.MORPH_WEBHOOKS["SECRETS"][0]
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        headers={
            **delivery.headers,
            "webhook-signature": "v1,c2lnbmF0dXJl",
            "x-original-url": f"/webhooks/morph/?token={secret}",
        }
    )

    content = admin_client.get(admin_url(delivery, "change")).content.decode()

    assert "webhook-signature" not in content and "c2lnbmF0dXJl" not in content
    assert secret not in content
    assert "/webhooks/morph/?token=[redacted]" in content


def test_delivery_body_that_is_not_json_is_shown_as_sent(admin_client):
    garbage = WebhookDeliveryFactory(body="<script>not json", status=Outcome.REJECTED, http_status=400)
    # Re-encoding would keep only one of the two values the sender wrote.
    twice = WebhookDeliveryFactory(
        body='{"event": "a", "event": "b"}', status=Outcome.REJECTED, http_status=400
    )

    assert (
        "<pre>&lt;script&gt;not json</pre>" in admin_client.get(admin_url(garbage, "change")).content.decode()
    )
    content = admin_client.get(admin_url(twice, "change")).content.decode()
    assert "<pre>{&quot;event&quot;: &quot;a&quot;, &quot;event&quot;: &quot;b&quot;}</pre>" in content


# Reprocess action


def test_reprocess_applies_a_failed_delivery(admin_client):
    delivery = WebhookDeliveryFactory(
        remote_id="opp_7", status=Outcome.FAILED, http_status=500, error="Traceback: database down"
    )

    response = reprocess(admin_client, delivery)

    assert messages_of(response) == [(constants.SUCCESS, "Reprocessed 1 delivery: 1 processed.")]
    opportunity = Opportunity.objects.get()
    assert (opportunity.remote_id, opportunity.name) == ("opp_7", "Acme renewal")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status, delivery.error, delivery.attempts) == (
        "processed",
        200,
        "",
        2,
    )
    assert delivery.processed_at is not None
    assert IdempotencyKey.objects.get().key == delivery.idempotency_key


@pytest.mark.parametrize("status", ["processed", "stale", "duplicate"])
def test_reprocess_of_a_settled_delivery_keeps_its_outcome(admin_client, send, sent_signals, status):
    assert send(opportunity_event("created"), key="k1").json() == {"status": "processed"}
    if status == "stale":
        assert send(opportunity_event("updated", updated_at="2020-01-01T00:00:00Z")).json() == {
            "status": status
        }
    if status == "duplicate":
        assert send(opportunity_event("created"), key="k1").json() == {"status": status}
    delivery = WebhookDelivery.objects.get(status=status)
    delivery_before = WebhookDelivery.objects.values().get(pk=delivery.pk)
    keys_before = list(IdempotencyKey.objects.values())
    opportunity_before = Opportunity.objects.values().get()

    response = reprocess(admin_client, delivery)

    assert messages_of(response) == [(constants.SUCCESS, "Reprocessed 1 delivery: 1 already applied.")]
    delivery.refresh_from_db()
    assert delivery.reprocessed_at is not None
    # The row still says what the delivery did when it ran; only the reprocess is added.
    assert WebhookDelivery.objects.values().get(pk=delivery.pk) == {
        **delivery_before,
        "reprocessed_at": delivery.reprocessed_at,
    }
    assert list(IdempotencyKey.objects.values()) == keys_before
    assert Opportunity.objects.values().get() == opportunity_before
    assert sent_signals.names == ["created"]


def test_reprocess_leaves_an_invalid_delivery_rejected(admin_client):
    delivery = WebhookDeliveryFactory(body="{not json", status=Outcome.REJECTED, http_status=400, error="")

    response = reprocess(admin_client, delivery)

    assert messages_of(response) == [(constants.WARNING, "Reprocessed 1 delivery: 1 rejected.")]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status, delivery.attempts) == ("rejected", 400, 2)
    assert json.loads(delivery.error)["fields"]["body"][0].startswith("Not valid JSON")
    assert not Opportunity.objects.exists()
    assert not IdempotencyKey.objects.exists()


def test_reprocess_counts_every_outcome(admin_client, send):
    send(opportunity_event("created", "opp_applied"), key="k-applied")
    applied = WebhookDelivery.objects.get()
    failed = WebhookDeliveryFactory(remote_id="opp_new", status=Outcome.FAILED, http_status=500)
    invalid = WebhookDeliveryFactory(body="[]", status=Outcome.REJECTED, http_status=400)

    response = reprocess(admin_client, applied, failed, invalid)

    assert messages_of(response) == [
        (constants.WARNING, "Reprocessed 3 deliveries: 1 processed, 1 rejected, 1 already applied.")
    ]
    assert set(Opportunity.objects.values_list("remote_id", flat=True)) == {"opp_applied", "opp_new"}


@pytest.fixture
def explode_on_boom():
    def receiver(instance: Opportunity, **kwargs: Any) -> None:
        if instance.remote_id == "opp_boom":
            raise RuntimeError("receiver exploded")

    opportunity_created.connect(receiver, weak=False, dispatch_uid="test-admin-boom")
    yield
    opportunity_created.disconnect(dispatch_uid="test-admin-boom")


@pytest.mark.usefixtures("explode_on_boom")
def test_reprocess_failure_does_not_stop_the_others(admin_client):
    boom = WebhookDeliveryFactory(remote_id="opp_boom", status=Outcome.FAILED, http_status=500)
    fine = WebhookDeliveryFactory(remote_id="opp_fine", status=Outcome.FAILED, http_status=500)

    response = reprocess(admin_client, boom, fine)

    assert messages_of(response) == [(constants.WARNING, "Reprocessed 2 deliveries: 1 processed, 1 failed.")]
    boom.refresh_from_db()
    fine.refresh_from_db()
    assert (boom.status, boom.http_status, boom.attempts) == ("failed", 500, 2)
    assert "RuntimeError: receiver exploded" in boom.error
    assert fine.status == "processed"
    # The failed event left nothing behind: neither its opportunity nor its key.
    assert list(Opportunity.objects.values_list("remote_id", flat=True)) == ["opp_fine"]
    assert list(IdempotencyKey.objects.values_list("remote_id", flat=True)) == ["opp_fine"]


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_user("staff", password=None, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_webhookdelivery"))
    client.force_login(user)
    return user


def test_reprocess_needs_its_permission(client, staff):
    delivery = WebhookDeliveryFactory(status=Outcome.FAILED, http_status=500)

    response = client.get(reverse(DELIVERIES))
    assert response.status_code == 200
    assert "reprocess" not in action_names(response)
    assert reprocess(client, delivery).status_code == 200
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert not Opportunity.objects.exists()

    staff.user_permissions.add(Permission.objects.get(codename="reprocess_webhookdelivery"))

    assert "reprocess" in action_names(client.get(reverse(DELIVERIES)))
    assert messages_of(reprocess(client, delivery)) == [
        (constants.SUCCESS, "Reprocessed 1 delivery: 1 processed.")
    ]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("processed", 2)
    assert Opportunity.objects.filter(remote_id=delivery.remote_id).exists()


def test_reprocess_applies_the_endpoint_policy(admin_client, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "ALLOWED_CONNECTORS": ["salesforce"]}
    delivery = WebhookDeliveryFactory(status="rejected", http_status=403)

    reprocess_delivery(delivery)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status) == ("rejected", 403)
    assert "permission_denied" in delivery.error
    assert Opportunity.objects.count() == 0


@pytest.mark.parametrize("http_status", [413, 415])
def test_refused_requests_are_not_reprocessed(http_status):
    delivery = WebhookDeliveryFactory(status="rejected", http_status=http_status, error="original")

    assert reprocess_delivery(delivery) == Result(Outcome.REJECTED, reason="original")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status, delivery.error, delivery.attempts) == (
        "rejected",
        http_status,
        "original",
        1,
    )
    assert Opportunity.objects.count() == 0


@pytest.mark.parametrize("name", [b"caf\xe9", b"caf\x00"], ids=["not_utf8", "nul"])
def test_reprocess_reads_the_body_as_received_not_its_stored_text(send, name):
    body = json.dumps(opportunity_event(fields={"name": "NAME"})).encode().replace(b"NAME", name)
    assert send(body, key="k1").status_code == 400
    delivery = WebhookDelivery.objects.get()
    # The text shown in the admin had to replace what it could not hold...
    assert "caf\ufffd" in delivery.body
    assert bytes(delivery.raw_body) == body

    # ... and would be a valid event: the reprocess must see the bytes Morph sent instead.
    assert reprocess_delivery(delivery).outcome == Outcome.REJECTED
    delivery.refresh_from_db()
    assert (delivery.status, delivery.http_status) == ("rejected", 400)
    assert json.loads(delivery.error)["fields"]["body"]
    assert not Opportunity.objects.exists()
    assert not IdempotencyKey.objects.exists()


def test_a_faithfully_stored_body_is_kept_once(send):
    send(opportunity_event(fields={"name": "café"}))

    assert WebhookDelivery.objects.get().raw_body is None
