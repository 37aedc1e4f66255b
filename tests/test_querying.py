"""The README's "Querying the mirror" examples, run: each answers in one query, within its tenant.
The last test keeps the README's copies identical to these."""

from __future__ import annotations

import inspect
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Count, QuerySet, Sum

from morph_webhooks.models import Contact, Engagement, EngagementType, Opportunity, StageType
from morph_webhooks.testing.factories import (
    CrmUserFactory,
    EngagementFactory,
    OpportunityFactory,
    StageFactory,
)

README = Path(__file__).resolve().parent.parent / "README.md"
pytestmark = pytest.mark.django_db


def pipeline_value_by_stage_type(connector_id: str, owner_id: str) -> dict[str, Decimal]:
    """The amount of a tenant's live deals by the type of their stage: OPEN, WON, LOST..."""
    deals = Opportunity.objects.alive().filter(connector_id=connector_id, owner_id=owner_id)
    totals = deals.values_list("stage__type").annotate(total=Sum("amount")).order_by("stage__type")
    return dict(totals)


def open_deals_of(contact: Contact) -> QuerySet[Opportunity]:
    """The live deals a contact is on whose stage is still open."""
    return contact.opportunities.alive().filter(stage__type=StageType.OPEN)


def last_call(deal: Opportunity) -> Engagement | None:
    """When did we last talk to this customer: the deal's latest call."""
    calls = deal.engagements.alive().filter(type=EngagementType.CALL)
    return calls.order_by("-started_at").first()


def won_this_month_by_owner(connector_id: str, owner_id: str, today: date) -> list[dict[str, Any]]:
    """Deals won this month, counted and summed by the CRM user who owns them. Morph sends no
    closing date: a won deal's last change in the CRM (its updatedAt) stands for it."""
    won = Opportunity.objects.alive().filter(
        connector_id=connector_id,
        owner_id=owner_id,
        stage__type=StageType.WON,
        remote_updated_at__date__gte=today.replace(day=1),
    )
    by_owner = won.values("crm_owner__email").annotate(deals=Count("pk"), total=Sum("amount"))
    return list(by_owner.order_by("-total"))


TENANTS = (("hubspot", "acme"), ("hubspot", "globex"))
MARCH = datetime(2025, 3, 20, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def crm() -> dict[str, Any]:
    """Two tenants with the same ids: stage "open" and "won", users "u1" and "u2", contact "c1",
    deals d1 (open, 100), d2 (won, 250, u1), d3 (won, 40, u2) and d4 (won in February), and calls
    on d1. Globex's amounts are ten times Acme's."""
    made: dict[str, Any] = {}
    for (connector, owner), factor in zip(TENANTS, (1, 10), strict=True):
        tenant = {"connector_id": connector, "owner_id": owner}
        StageFactory(**tenant, remote_id="open", type=StageType.OPEN)
        StageFactory(**tenant, remote_id="won", type=StageType.WON)
        CrmUserFactory(**tenant, remote_id="u1", email=f"ada@{owner}.example")
        CrmUserFactory(**tenant, remote_id="u2", email=f"alan@{owner}.example")
        made[owner] = contact = Contact.objects.create(
            **tenant, remote_id="c1", remote_created_at=MARCH, remote_updated_at=MARCH
        )
        for remote_id, stage, amount, user, updated in (
            ("d1", "open", 100, "u1", MARCH),
            ("d2", "won", 250, "u1", MARCH),
            ("d3", "won", 40, "u2", MARCH),
            ("d4", "won", 999, "u2", MARCH.replace(month=2)),
        ):
            OpportunityFactory(
                **tenant,
                remote_id=remote_id,
                stage_id=stage,
                amount=Decimal(amount * factor),
                crm_owner_id=user,
                contact_ids=[contact.remote_id],
                remote_updated_at=updated,
            )
        for day in (3, 12, 7):
            EngagementFactory(
                **tenant,
                type="call",
                title=f"{owner} call on the {day}th",
                started_at=MARCH.replace(day=day),
                opportunity_ids=["d1"],
            )
        EngagementFactory(**tenant, type="meeting", started_at=MARCH.replace(day=15), opportunity_ids=["d1"])
    return made


def test_the_pipeline_value_by_stage_type(crm: dict[str, Any], django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        assert pipeline_value_by_stage_type("hubspot", "acme") == {"OPEN": 100, "WON": 250 + 40 + 999}


def test_a_contacts_open_deals(crm: dict[str, Any], django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        assert [deal.amount for deal in open_deals_of(crm["globex"])] == [1000]


def test_a_deals_last_call(crm: dict[str, Any], django_assert_num_queries: Any) -> None:
    deal = Opportunity.objects.get(owner_id="acme", remote_id="d1")
    with django_assert_num_queries(1):
        call = last_call(deal)
    assert call is not None and call.title == "acme call on the 12th"


def test_the_deals_won_this_month_by_owner(crm: dict[str, Any], django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        assert won_this_month_by_owner("hubspot", "globex", date(2025, 3, 31)) == [
            {"crm_owner__email": "ada@globex.example", "deals": 1, "total": 2500},
            {"crm_owner__email": "alan@globex.example", "deals": 1, "total": 400},
        ]


def test_the_readme_shows_these_examples() -> None:
    readme = README.read_text()
    for example in (pipeline_value_by_stage_type, open_deals_of, last_call, won_this_month_by_owner):
        assert inspect.getsource(example) in readme, f"README.md's example differs from {example.__name__}"
