"""The admin of the mirrored resources: one read-only list and change page per Morph model."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import strip_tags

from morph_webhooks.admin.filters import CONNECTION_CHOICES
from morph_webhooks.admin.resource_filters import FILTER_CHOICES
from morph_webhooks.models import Connection, Opportunity, Pipeline, Stage, StageType
from morph_webhooks.testing.factories import (
    CrmUserFactory,
    IdempotencyKeyFactory,
    OpportunityFactory,
    PipelineFactory,
    StageFactory,
    WebhookDeliveryFactory,
)
from tests.helpers import T0, admin_url, filter_titles, listed

pytestmark = pytest.mark.django_db

OPPORTUNITIES = "admin:morph_webhooks_opportunity_changelist"
DELIVERIES = "admin:morph_webhooks_webhookdelivery_changelist"
KEYS = "admin:morph_webhooks_idempotencykey_changelist"


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

    assert filter_titles(admin_client, OPPORTUNITIES) == [
        "connection",
        "stage",
        "stage type",
        "pipeline",
        "deleted",
    ]

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

    assert cells(response, "stage_named", "pipeline_named", "crm_owner_named") == [
        ("Closed won (won)", "Sales", "Ada Lovelace"),
        ("stage_new", "pipeline_new", "user_7"),
        ("—", "—", "—"),
    ]
    content = response.content.decode()
    # The pipeline under its stage: one column less, for the list to fit a laptop's width.
    assert 'Closed won (won)<br><span class="quiet">Sales</span>' in content
    for header in ("Stage", "Owner", "Connection", "Updated", "Deleted"):
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

    assert cells(response, "stage_named") == [("Won by one (won)",), ("Lost by two (lost)",), ("stage_1",)]
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


@pytest.mark.parametrize("opportunities", [2, 100])
def test_opportunity_list_queries_do_not_grow_with_the_page(
    admin_client, django_assert_num_queries, opportunities
):
    fill_page(opportunities)

    # The session, the user, the count; the connector, stage and pipeline filters' choices; the
    # page, with its rows' stages, pipelines and owners joined.
    with django_assert_num_queries(7):
        response = admin_client.get(reverse(OPPORTUNITIES))
    assert len(response.context["cl"].result_list) == opportunities


def filter_choices(response: Any) -> dict[str, list[tuple[str, str]]]:
    """Each filter's choices after "All": what it shows, and the query string it links to."""
    return {
        str(spec.title): [
            (str(choice["display"]), choice["query_string"])
            for choice in spec.choices(response.context["cl"])
        ][1:]
        for spec in response.context["cl"].filter_specs
    }


def two_tenants() -> tuple[Opportunity, Opportunity]:
    """Two tenants of one connector whose CRMs use the same ids and names."""
    deals = []
    for owner_id in ("acme", "globex"):
        StageFactory(owner_id=owner_id, remote_id="stage_won", name="Closed won", type=StageType.WON)
        StageFactory(owner_id=owner_id, remote_id="stage_gone", name="Old", deleted_at=T0)
        PipelineFactory(owner_id=owner_id, remote_id="pipeline_sales", name="Sales")
        deals.append(OpportunityFactory(owner_id=owner_id, remote_id="opp_1", stage_id="stage_won"))
    return deals[0], deals[1]


def test_filters_say_whose_stages_and_pipelines_they_offer(admin_client):
    acme, globex = two_tenants()

    choices = filter_choices(admin_client.get(reverse(OPPORTUNITIES)))

    # Deleted stages are not offered; each tenant's stage is its own choice, filtering on its tenant.
    assert [display for display, _ in choices["stage"]] == [
        "Closed won (won) · hubspot / acme",
        "Closed won (won) · hubspot / globex",
    ]
    assert [display for display, _ in choices["pipeline"]] == [
        "Sales · hubspot / acme",
        "Sales · hubspot / globex",
    ]
    query = choices["stage"][1][1].lstrip("?")
    assert listed(admin_client, OPPORTUNITIES, query) == [globex]
    # By the id alone (the overview's links before they named a connection), in every tenant.
    assert set(listed(admin_client, OPPORTUNITIES, "stage_id=stage_won")) == {acme, globex}

    # Once filtered on a connection, only its stages, named without it.
    choices = filter_choices(admin_client.get(reverse(OPPORTUNITIES) + "?connector_id=hubspot&owner_id=acme"))
    assert [display for display, _ in choices["stage"]] == ["Closed won (won)"]
    assert [display for display, _ in choices["pipeline"]] == ["Sales"]


def test_every_list_filters_by_connection(admin_client):
    acme, globex = two_tenants()
    for owner_id in ("acme", "globex"):
        Connection.objects.create(connector_id="hubspot", owner_id=owner_id)
        WebhookDeliveryFactory(owner_id=owner_id, remote_id="opp_1", idempotency_key=f"key-{owner_id}")
        IdempotencyKeyFactory(owner_id=owner_id, key="key-1")

    for changelist in (OPPORTUNITIES, DELIVERIES, KEYS, "admin:morph_webhooks_stage_changelist"):
        response = admin_client.get(reverse(changelist))
        assert [display for display, _ in filter_choices(response)["connection"]] == [
            "hubspot / acme",
            "hubspot / globex",
        ]
        [(_, query)] = [c for c in filter_choices(response)["connection"] if c[0] == "hubspot / globex"]
        assert {row.owner_id for row in listed(admin_client, changelist, query.lstrip("?"))} == {"globex"}
    assert listed(admin_client, OPPORTUNITIES, "connector_id=hubspot&owner_id=acme") == [acme]
    assert listed(admin_client, OPPORTUNITIES, "owner_id=globex") == [globex]


@pytest.mark.parametrize("connections", [2, CONNECTION_CHOICES + 1, 2000])
def test_connection_filter_scales_to_thousands_of_connections(
    admin_client, django_assert_num_queries, connections
):
    Connection.objects.bulk_create(
        Connection(connector_id="hubspot", owner_id=f"tenant_{i:04}") for i in range(connections)
    )
    OpportunityFactory(owner_id="tenant_0001", name="Wanted")
    OpportunityFactory(owner_id="tenant_0000", name="Other")

    # The session, the user, the count; the connection, stage and pipeline filters' choices; the
    # page with its rows' stages, pipelines and owners: whatever the connections.
    with django_assert_num_queries(7):
        response = admin_client.get(
            reverse(OPPORTUNITIES) + "?connector_id=hubspot&owner_id=tenant_0001&q=Wanted"
        )

    assert [o.name for o in response.context["cl"].result_list] == ["Wanted"]
    content = response.content.decode()
    sidebar = content[content.index('data-filter-title="connection"') :]
    sidebar = sidebar[: sidebar.index("</details>")]
    if connections <= CONNECTION_CHOICES:
        # "All", then each connection.
        assert sidebar.count("<li") == connections + 1
        assert "<form" not in sidebar
    else:
        # No sidebar of links: a form takes the connector and owner, keeping the search.
        assert "<li" not in sidebar
        assert '<input type="text" id="morph-filter-owner" name="owner_id" value="tenant_0001">' in sidebar
        assert '<input type="hidden" name="q" value="Wanted">' in sidebar
        assert ">Owner (tenant)</label>" in sidebar


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
    for label in ("Stage", "Pipeline", "Owner", "Amount", "Morph id", "Connector", "Owner (tenant)"):
        assert f">{label}:</label>" in content
    for label in ("Stage id", "Crm owner id", "Remote id", "Pipeline id", "Connector id", "Owner id"):
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
    # Said first, above the fields that read as the CRM's current state otherwise.
    note = f'<p class="errornote morph-deleted-note">Deleted: Morph reported it deleted in the CRM on {T0:%Y-%m-%d %H:%M:%S}.'
    assert note in content
    assert content.index(note) < content.index('class="form-row field-name"')
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
    content = admin_client.get(admin_url(Pipeline.objects.get(), "change")).content.decode()
    # Its stages, linked, with their type and deals; one it lists that has not arrived, by its id.
    qualified = admin_url(Stage.objects.get(), "change")
    assert f'<td><a href="{qualified}">Qualified</a></td><td>open</td><td>0</td>' in content
    assert "<td>stage_x</td><td>—</td><td>—</td>" in content


def test_show_counts_counts_each_connection_and_stage(admin_client):
    two_tenants()
    OpportunityFactory(owner_id="globex", remote_id="opp_2", stage_id="stage_won")
    for owner_id in ("acme", "globex"):
        Connection.objects.create(connector_id="hubspot", owner_id=owner_id)

    choices = filter_choices(admin_client.get(reverse(OPPORTUNITIES) + "?_facets=True"))

    assert [display for display, _ in choices["connection"]] == ["hubspot / acme (1)", "hubspot / globex (2)"]
    assert [display for display, _ in choices["stage"]] == [
        "Closed won (won) · hubspot / acme (1)",
        "Closed won (won) · hubspot / globex (2)",
    ]
