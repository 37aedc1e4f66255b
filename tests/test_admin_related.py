"""The change pages' related rows: a deal's stage, contacts and engagements; a contact's, a
company's, a stage's, a pipeline's and a CRM user's deals and engagements. Read through the
relations, within the row's connection, in a number of queries that does not grow with the rows."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils.html import strip_tags

from morph_webhooks.admin.related import SHOWN
from morph_webhooks.models import (
    Company,
    Contact,
    CrmUser,
    Engagement,
    Opportunity,
    Pipeline,
    Stage,
    StageType,
)
from morph_webhooks.testing.factories import (
    CrmUserFactory,
    EngagementFactory,
    OpportunityFactory,
    PipelineFactory,
    StageFactory,
)
from tests.helpers import admin_url, filter_titles, listed

pytestmark = pytest.mark.django_db

OPPORTUNITIES = "admin:morph_webhooks_opportunity_changelist"
ENGAGEMENTS = "admin:morph_webhooks_engagement_changelist"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def contact(remote_id: str, first_name: str, owner_id: str = "tenant_1") -> Contact:
    return Contact.objects.create(
        connector_id="hubspot",
        owner_id=owner_id,
        remote_id=remote_id,
        first_name=first_name,
        last_name="Doe",
        remote_created_at=T0,
        remote_updated_at=T0,
    )


def company(remote_id: str, name: str, owner_id: str = "tenant_1") -> Company:
    return Company.objects.create(
        connector_id="hubspot",
        owner_id=owner_id,
        remote_id=remote_id,
        name=name,
        remote_created_at=T0,
        remote_updated_at=T0,
    )


def field(content: str, name: str) -> str:
    """The text of the change page's field ``name``."""
    start = content.index(">", content.index(f'class="form-row field-{name}')) + 1
    return strip_tags(content[start : content.index('<div class="form-row', start + 1)])


def table_rows(content: str, name: str) -> list[tuple[str, ...]]:
    """The cells of each row of the table in the change page's field ``name``."""
    start = content.index(f'class="form-row field-{name}')
    body = content[content.index("<tbody>", start) : content.index("</tbody>", start)]
    return [tuple(strip_tags(cell) for cell in row.split("<td>")[1:]) for row in body.split("<tr>")[1:]]


@pytest.fixture
def deal() -> Opportunity:
    """A won deal of tenant_1 with two contacts (one not arrived yet), a company and three
    engagements; tenant_2 holds the same ids with other names."""
    for owner_id, stage_name in (("tenant_1", "Closed won"), ("tenant_2", "Theirs")):
        StageFactory(owner_id=owner_id, remote_id="stage_won", name=stage_name, type=StageType.WON)
        PipelineFactory(owner_id=owner_id, remote_id="pipeline_sales", name=f"{stage_name} pipeline")
        CrmUserFactory(owner_id=owner_id, first_name="Ada" if owner_id == "tenant_1" else "Eve")
        contact("contact_1", "Jane" if owner_id == "tenant_1" else "Mallory", owner_id)
        company("company_1", "Acme" if owner_id == "tenant_1" else "Globex", owner_id)
    OpportunityFactory(owner_id="tenant_2", remote_id="opp_1", stage_id="stage_won")
    EngagementFactory(owner_id="tenant_2", title="Their call", opportunity_ids=["opp_1"])
    opportunity = OpportunityFactory(
        remote_id="opp_1",
        name="Acme renewal",
        stage_id="stage_won",
        contact_ids=["contact_1", "contact_late"],
        company_ids=["company_1"],
    )
    for day, (kind, title) in enumerate(
        [("call", "Discovery call"), ("meeting", "Demo"), ("email", "Proposal")]
    ):
        EngagementFactory(
            type=kind,
            title=title,
            started_at=T0 + timedelta(days=day),
            opportunity_ids=["opp_1"],
            contact_ids=["contact_1"],
        )
    return opportunity


def test_a_deals_page_links_its_stage_pipeline_owner_contacts_and_companies(admin_client, deal):
    content = admin_client.get(admin_url(deal, "change")).content.decode()

    tenant_1 = {"connector_id": "hubspot", "owner_id": "tenant_1"}
    links = {
        "stage_linked": ("Closed won (won)", admin_url(deal.stage, "change")),
        "pipeline_linked": ("Closed won pipeline", admin_url(deal.pipeline, "change")),
        "crm_owner_linked": ("Ada Lovelace", admin_url(deal.crm_owner, "change")),
        "listed_companies": ("Acme", admin_url(Company.objects.get(**tenant_1), "change")),
    }
    for name, (text, url) in links.items():
        assert f'<a href="{url}">{text}</a>' in content, name
    jane = admin_url(Contact.objects.get(**tenant_1), "change")
    # In Morph's order; a contact not arrived yet by its id.
    assert f'<a href="{jane}">Jane Doe</a>, contact_late' in content
    assert "Theirs" not in content and "Mallory" not in content and "Globex" not in content


def test_a_deals_engagements_are_a_timeline_newest_first(admin_client, deal):
    content = admin_client.get(admin_url(deal, "change")).content.decode()

    assert "Engagements:" in field(content, "timeline")
    assert table_rows(content, "timeline") == [
        ("emailoutbound · completed", "Proposal", "2025-03-03 09:00:00", "Ada Lovelace", "Jane Doe"),
        ("meetingoutbound · completed", "Demo", "2025-03-02 09:00:00", "Ada Lovelace", "Jane Doe"),
        ("calloutbound · completed", "Discovery call", "2025-03-01 09:00:00", "Ada Lovelace", "Jane Doe"),
    ]
    demo = Engagement.objects.get(title="Demo")
    assert f'<a href="{admin_url(demo, "change")}">Demo</a>' in content
    assert "Their call" not in content
    # All shown: no link to more.
    assert "All engagements" not in content


def test_an_empty_related_list_says_so(admin_client):
    lonely = OpportunityFactory(contact_ids=[], company_ids=[])

    content = admin_client.get(admin_url(lonely, "change")).content.decode()

    assert "No engagements." in content
    contact_page = admin_client.get(admin_url(contact("c_9", "Solo"), "change")).content.decode()
    assert "No opportunities." in contact_page and "No engagements." in contact_page


def test_a_long_timeline_shows_the_newest_and_links_to_all(admin_client, deal):
    for i in range(SHOWN):
        EngagementFactory(
            title=f"Later call {i}", started_at=T0 + timedelta(days=10 + SHOWN - i), opportunity_ids=["opp_1"]
        )

    content = admin_client.get(admin_url(deal, "change")).content.decode()

    assert f"Later call {SHOWN - 1}" in content and "Later call 0" in content
    assert table_rows(content, "timeline")[0][1] == "Later call 0"
    assert "Proposal" not in content  # the 51st newest
    all_of_them = f"{reverse(ENGAGEMENTS)}?opportunities={deal.pk}&o=-2"
    assert f'<a href="{all_of_them.replace("&", "&amp;")}">All engagements</a>' in content
    # The list behind the link: every engagement of this deal, in its tenant only, and says whose.
    response = admin_client.get(all_of_them)
    # Newest first by when they happened, as the timeline.
    shown = list(response.context["cl"].result_list)
    assert [e.title for e in shown[:2]] == ["Later call 0", "Later call 1"]
    assert len(listed(admin_client, ENGAGEMENTS, f"opportunities={deal.pk}")) == SHOWN + 3
    [chosen] = [spec for spec in response.context["cl"].filter_specs if str(spec.title) == "opportunities"]
    assert chosen.lookup_choices == [(str(deal.pk), "Acme renewal")]
    assert "Their call" not in response.content.decode()
    assert listed(admin_client, ENGAGEMENTS, "opportunities=nonsense") == []


def test_contacts_and_companies_list_their_deals_and_engagements(admin_client, deal):
    tenant_1 = {"connector_id": "hubspot", "owner_id": "tenant_1"}
    jane = Contact.objects.get(**tenant_1)
    EngagementFactory(title="Lunch with Jane", contact_ids=["contact_1"], started_at=T0 + timedelta(days=9))

    content = admin_client.get(admin_url(jane, "change")).content.decode()

    deals = field(content, "deals")
    assert "Acme renewal" in deals and "12,500.00 EUR" in deals and "Closed won (won)" in deals
    timeline = field(content, "timeline")
    assert timeline.index("Lunch with Jane") < timeline.index("Proposal") < timeline.index("Discovery call")
    assert "Their call" not in content

    acme = Company.objects.get(**tenant_1)
    content = admin_client.get(admin_url(acme, "change")).content.decode()
    assert "Acme renewal" in field(content, "deals")
    assert "No engagements." in field(content, "timeline")

    assert listed(admin_client, OPPORTUNITIES, f"contacts={jane.pk}") == [deal]
    assert listed(admin_client, OPPORTUNITIES, f"companies={acme.pk}") == [deal]


def test_stages_pipelines_and_users_list_their_deals(admin_client, deal):
    stage, pipeline, user = deal.stage, deal.pipeline, deal.crm_owner
    for row in (stage, pipeline, user):
        content = admin_client.get(admin_url(row, "change")).content.decode()
        assert "Acme renewal" in field(content, "deals"), row
        assert "Their call" not in content
    content = admin_client.get(admin_url(user, "change")).content.decode()
    assert "Proposal" in field(content, "owned_timeline")
    assert listed(admin_client, OPPORTUNITIES, f"crm_owner={user.pk}") == [deal]
    assert len(listed(admin_client, ENGAGEMENTS, f"crm_owner={user.pk}")) == 3
    # A pipeline's stages in the order it lists them, with their deals, counted in its tenant.
    StageFactory(remote_id="stage_a", name="A first", pipeline_id="pipeline_sales")
    pipeline.stage_ids = ["stage_won", "stage_a", "stage_gone"]
    pipeline.save()
    content = admin_client.get(admin_url(pipeline, "change")).content.decode()
    assert table_rows(content, "stages_in_order") == [
        ("Closed won", "won", "1"),
        ("A first", "open", "0"),
        ("stage_gone", "—", "—"),
    ]


def test_the_deal_list_filters_by_stage_type_in_each_deals_tenant(admin_client):
    StageFactory(owner_id="tenant_1", remote_id="s1", type=StageType.WON)
    StageFactory(owner_id="tenant_2", remote_id="s1", type=StageType.LOST)
    won = OpportunityFactory(owner_id="tenant_1", stage_id="s1")
    lost = OpportunityFactory(owner_id="tenant_2", stage_id="s1")
    early = OpportunityFactory(owner_id="tenant_1", stage_id="s_not_arrived")

    assert "stage type" in filter_titles(admin_client, OPPORTUNITIES)
    assert listed(admin_client, OPPORTUNITIES, "stage__type=WON") == [won]
    assert listed(admin_client, OPPORTUNITIES, "stage__type=LOST") == [lost]
    assert listed(admin_client, OPPORTUNITIES, "stage__type=LOST&owner_id=tenant_1") == []
    assert early not in listed(admin_client, OPPORTUNITIES, "stage__type=OPEN")


def page_of_100(owner_id: str = "tenant_1") -> Opportunity:
    """A deal with 100 contacts, 100 companies and 100 engagements, each with two contacts."""
    StageFactory(owner_id=owner_id)
    PipelineFactory(owner_id=owner_id, stage_ids=["stage_qualified"])
    CrmUserFactory(owner_id=owner_id)
    Contact.objects.bulk_create(
        Contact(
            connector_id="hubspot",
            owner_id=owner_id,
            remote_id=f"contact_{i}",
            first_name=f"C{i}",
            remote_created_at=T0,
            remote_updated_at=T0,
        )
        for i in range(100)
    )
    Company.objects.bulk_create(
        Company(
            connector_id="hubspot",
            owner_id=owner_id,
            remote_id=f"company_{i}",
            name=f"K{i}",
            remote_created_at=T0,
            remote_updated_at=T0,
        )
        for i in range(100)
    )
    opportunity = OpportunityFactory(
        owner_id=owner_id,
        remote_id="opp_big",
        contact_ids=[f"contact_{i}" for i in range(100)],
        company_ids=[f"company_{i}" for i in range(100)],
    )
    for i in range(100):
        EngagementFactory(
            owner_id=owner_id,
            started_at=T0 + timedelta(hours=i),
            opportunity_ids=["opp_big"],
            contact_ids=[f"contact_{i}", f"contact_{(i + 1) % 100}"],
            company_ids=[f"company_{i}"],
            user_ids=["user_42"],
        )
        OpportunityFactory(owner_id=owner_id, contact_ids=["contact_0"], company_ids=["company_0"])
    return opportunity


def test_change_pages_of_100_related_rows_cost_a_fixed_number_of_queries(
    admin_client, django_assert_num_queries
):
    opportunity = page_of_100()
    tenant_1 = {"connector_id": "hubspot", "owner_id": "tenant_1"}
    first_contact = Contact.objects.get(**tenant_1, remote_id="contact_0")
    first_company = Company.objects.get(**tenant_1, remote_id="company_0")
    stage, pipeline, owner = opportunity.stage, opportunity.pipeline, opportunity.crm_owner
    # Each change page reads its model's content type once per process, then from a cache.
    ContentType.objects.get_for_models(Opportunity, Contact, Company, Stage, Pipeline, CrmUser, Engagement)

    # The session, the user, the deal with its stage, pipeline and owner; its contacts and its
    # companies shown; its newest engagements with their owners, and their contacts.
    with django_assert_num_queries(7):
        content = admin_client.get(admin_url(opportunity, "change")).content.decode()
    assert len(re.findall(r'href="/admin/morph_webhooks/engagement/\d+/change/"', content)) == SHOWN
    assert f"and {100 - SHOWN} more" in field(content, "listed_contacts")
    # The session, the user, the row; its deals with their stages and owners; its engagements
    # with their owners, and their contacts.
    for row in (first_contact, first_company):
        with django_assert_num_queries(6):
            content = admin_client.get(admin_url(row, "change")).content.decode()
        assert "All opportunities" in content
    # The session, the user, the stage with its pipeline; its deals.
    with django_assert_num_queries(4):
        content = admin_client.get(admin_url(stage, "change")).content.decode()
    # All of them: the list's own filter by stage, in the stage's connection.
    query = "stage_id=stage_qualified&amp;connector_id=hubspot&amp;owner_id=tenant_1"
    assert f'<a href="{reverse(OPPORTUNITIES)}?{query}">All opportunities</a>' in content
    # The session, the user, the pipeline; its stages shown; its deals.
    with django_assert_num_queries(5):
        admin_client.get(admin_url(pipeline, "change"))
    # The session, the user, the user; their deals; their engagements with owners, and contacts.
    with django_assert_num_queries(6):
        content = admin_client.get(admin_url(owner, "change")).content.decode()
    assert "All engagements" in content and "All opportunities" in content
    # An engagement: the session, the user, the engagement with its owner; its users, companies,
    # contacts and opportunities shown.
    engagement = Engagement.objects.filter(**tenant_1).first()
    assert engagement is not None
    with django_assert_num_queries(7):
        admin_client.get(admin_url(engagement, "change"))


@pytest.mark.parametrize("changelist", ["engagement", "stage", "contact"])
def test_lists_of_100_rows_cost_a_fixed_number_of_queries(
    admin_client, django_assert_num_queries, changelist
):
    page_of_100()

    # The session, the user, the count, the connection filter's choices, the page (with its
    # referenced rows joined), and each filter's by a referenced model.
    expected = {"engagement": 5, "stage": 6, "contact": 5}[changelist]
    with django_assert_num_queries(expected):
        response = admin_client.get(reverse(f"admin:morph_webhooks_{changelist}_changelist"))
    assert len(response.context["cl"].result_list) >= 1
