"""The relations between mirrored resources, always within one connection.

Every test that reads a relation sets up two tenants holding the same Morph ids, so that a
lookup crossing tenants, or correlating on part of the connection only, returns rows it must not.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Count, Max, Q, Sum

from morph_webhooks.models import (
    Company,
    Contact,
    CrmUser,
    Engagement,
    EngagementOpportunity,
    Opportunity,
    Pipeline,
    Stage,
    StageType,
)
from morph_webhooks.resources.relations import tenant_ref
from morph_webhooks.testing import engagement_event, morph_headers, opportunity_event, post_event, reference
from morph_webhooks.testing.factories import (
    CrmUserFactory,
    EngagementFactory,
    OpportunityFactory,
    PipelineFactory,
    StageFactory,
)

pytestmark = pytest.mark.django_db

TENANTS = [("hubspot", "tenant_1"), ("hubspot", "tenant_2")]
ACME, GLOBEX = TENANTS


def at(day: int) -> datetime:
    return datetime(2025, 3, day, 9, 0, tzinfo=timezone.utc)


def on(tenant: tuple[str, str]) -> dict[str, str]:
    return {"connector_id": tenant[0], "owner_id": tenant[1]}


def send(client: Any, payload: dict[str, Any], tenant: tuple[str, str] = ACME) -> None:
    response = post_event(client, payload, headers=morph_headers(connector_id=tenant[0], owner_id=tenant[1]))
    assert response.status_code == 200, response.content
    assert response.json()["status"] in ("processed", "stale"), response.json()


def contact(tenant: tuple[str, str], remote_id: str, email: str) -> Contact:
    return Contact.objects.create(
        **on(tenant), remote_id=remote_id, email=email, remote_created_at=at(1), remote_updated_at=at(1)
    )


def company(tenant: tuple[str, str], remote_id: str, name: str) -> Company:
    return Company.objects.create(
        **on(tenant), remote_id=remote_id, name=name, remote_created_at=at(1), remote_updated_at=at(1)
    )


@pytest.fixture
def two_tenants(client: Any) -> dict[str, Any]:
    """Both tenants hold stage "s1", pipeline "p1", user "u1", contacts "c1" and "c2", company
    "k1" and deal "d1" listing c1 and k1, with different names and types: tenant_1's stage is won,
    tenant_2's lost."""
    made: dict[str, Any] = {}
    for tenant, stage_type, letter in ((ACME, StageType.WON, "a"), (GLOBEX, StageType.LOST, "g")):
        PipelineFactory(**on(tenant), remote_id="p1", name=f"pipeline {letter}")
        StageFactory(**on(tenant), remote_id="s1", name=f"stage {letter}", type=stage_type, pipeline_id="p1")
        CrmUserFactory(**on(tenant), remote_id="u1", email=f"owner@{letter}.example")
        contact(tenant, "c1", f"c1@{letter}.example")
        contact(tenant, "c2", f"c2@{letter}.example")
        company(tenant, "k1", f"company {letter}")
        fields = {
            "name": f"deal {letter}",
            "amount": 100 if tenant == ACME else 7,
            "stage": reference("crmStage", "s1"),
            "pipeline": reference("crmPipeline", "p1"),
            "owner": reference("genericUser", "u1"),
            "contacts": [reference("genericContact", "c1")],
            "companies": [reference("genericCompany", "k1")],
        }
        send(client, opportunity_event(remote_id="d1", fields=fields), tenant)
        made[letter] = Opportunity.objects.get(**on(tenant), remote_id="d1")
    return made


class TestSingleReferences:
    def test_each_reads_its_own_tenants_row(self, two_tenants: dict[str, Any]) -> None:
        for letter, deal in two_tenants.items():
            deal = Opportunity.objects.get(pk=deal.pk)
            assert deal.stage.name == f"stage {letter}"
            assert deal.pipeline.name == f"pipeline {letter}"
            assert deal.crm_owner.email == f"owner@{letter}.example"
            assert deal.stage.pipeline.name == f"pipeline {letter}"
        stage = Stage.objects.get(**on(ACME), remote_id="s1")
        assert [d.name for d in stage.opportunities.all()] == ["deal a"]
        assert [s.name for s in Pipeline.objects.get(**on(GLOBEX)).stages.all()] == ["stage g"]
        assert [d.name for d in CrmUser.objects.get(**on(GLOBEX)).opportunities.all()] == ["deal g"]

    def test_a_missing_row_reads_as_none(self, client: Any) -> None:
        send(client, opportunity_event(remote_id="d1"))
        deal = Opportunity.objects.get()
        assert deal.stage_id == "stage_qualified"
        assert deal.stage is None and deal.pipeline is None and deal.crm_owner is None
        assert Opportunity.objects.select_related("stage").get().stage is None
        # ... until it arrives, whatever the order of events.
        StageFactory()
        assert Opportunity.objects.select_related("stage").get().stage.remote_id == "stage_qualified"
        assert Opportunity.objects.get().stage.remote_id == "stage_qualified"

    def test_no_reference_reads_as_none_without_a_query(self, django_assert_num_queries: Any) -> None:
        deal = OpportunityFactory(stage_id="")
        with django_assert_num_queries(0):
            assert deal.stage is None

    def test_a_deleted_row_is_still_reached(self, two_tenants: dict[str, Any]) -> None:
        Stage.objects.filter(**on(ACME)).update(deleted_at=at(2))
        deal = Opportunity.objects.get(pk=two_tenants["a"].pk)
        assert deal.stage.is_deleted
        assert Opportunity.objects.filter(stage__deleted_at__isnull=False).get() == deal
        assert Opportunity.objects.filter(stage__in=Stage.objects.alive()).get() == two_tenants["g"]

    def test_changing_the_id_in_memory_changes_the_row_read(self, two_tenants: dict[str, Any]) -> None:
        StageFactory(**on(ACME), remote_id="s2", name="stage two")
        deal = Opportunity.objects.select_related("stage").get(pk=two_tenants["a"].pk)
        assert deal.stage.name == "stage a"
        deal.stage_id = "s2"
        assert deal.stage.name == "stage two"
        deal.stage_id = "nowhere"
        assert deal.stage is None
        deal.stage_id = ""
        assert deal.stage is None

    def test_assigning_a_row_sets_the_id_and_refuses_another_tenants(
        self, two_tenants: dict[str, Any]
    ) -> None:
        deal = two_tenants["a"]
        other = StageFactory(**on(ACME), remote_id="s2")
        deal.stage = other
        assert deal.stage_id == "s2"
        deal.save()
        assert Opportunity.objects.get(pk=deal.pk, stage=other)
        with pytest.raises(ValueError, match="another connection"):
            deal.stage = Stage.objects.get(**on(GLOBEX), remote_id="s1")
        deal.stage = None
        assert deal.stage_id == ""

    def test_lookups_across_the_relation_stay_in_the_tenant(self, two_tenants: dict[str, Any]) -> None:
        a, g = two_tenants["a"], two_tenants["g"]
        assert list(Opportunity.objects.filter(stage__type="WON")) == [a]
        assert list(Opportunity.objects.exclude(stage__type="WON")) == [g]
        assert list(Opportunity.objects.filter(~Q(stage__type="LOST"))) == [a]
        assert list(
            Opportunity.objects.filter(pipeline__name="pipeline g", crm_owner__email__endswith="g.example")
        ) == [g]
        # The reverse side is many-valued: exclude() and Count correlate on the whole connection.
        assert list(Stage.objects.exclude(opportunities__name="deal a").values_list("name", flat=True)) == [
            "stage g"
        ]
        counted = Stage.objects.annotate(deals=Count("opportunities")).order_by("name")
        assert [(s.name, s.deals) for s in counted] == [("stage a", 1), ("stage g", 1)]
        assert Opportunity.objects.filter(stage__type="WON").aggregate(total=Sum("amount")) == {
            "total": Decimal("100")
        }
        assert list(Opportunity.objects.order_by("stage__name").values_list("stage__name", "name")) == [
            ("stage a", "deal a"),
            ("stage g", "deal g"),
        ]

    def test_a_page_of_deals_with_stage_pipeline_and_owner_is_one_query(
        self, two_tenants: dict[str, Any], django_assert_num_queries: Any
    ) -> None:
        with django_assert_num_queries(1):
            deals = list(
                Opportunity.objects.select_related("stage", "pipeline", "crm_owner").order_by("name")
            )
            assert [(d.stage.name, d.pipeline.name, d.crm_owner.email) for d in deals] == [
                ("stage a", "pipeline a", "owner@a.example"),
                ("stage g", "pipeline g", "owner@g.example"),
            ]
        with django_assert_num_queries(2):
            stages = list(Stage.objects.prefetch_related("opportunities").order_by("name"))
            assert [[d.name for d in s.opportunities.all()] for s in stages] == [["deal a"], ["deal g"]]


class TestLists:
    def test_each_reads_its_own_tenants_rows(self, two_tenants: dict[str, Any]) -> None:
        for letter, deal in two_tenants.items():
            assert [c.email for c in deal.contacts.all()] == [f"c1@{letter}.example"]
            assert [k.name for k in deal.companies.all()] == [f"company {letter}"]
        c1 = Contact.objects.get(**on(GLOBEX), remote_id="c1")
        assert list(c1.opportunities.alive()) == [two_tenants["g"]]
        k1 = Company.objects.get(**on(ACME), remote_id="k1")
        assert list(k1.opportunities.all()) == [two_tenants["a"]]

    def test_lookups_across_the_lists_stay_in_the_tenant(self, two_tenants: dict[str, Any]) -> None:
        a, g = two_tenants["a"], two_tenants["g"]
        assert list(Opportunity.objects.filter(contacts__email="c1@a.example")) == [a]
        # Django correlates a many-valued exclude() with a subquery: on the ref, the whole connection.
        assert list(Opportunity.objects.exclude(contacts__email="c1@a.example")) == [g]
        assert list(Opportunity.objects.filter(~Q(companies__name="company g"))) == [a]
        assert list(
            Contact.objects.filter(opportunities__remote_id="d1", **on(GLOBEX)).values_list(
                "email", flat=True
            )
        ) == ["c1@g.example"]
        assert list(
            Contact.objects.exclude(opportunities__name="deal a")
            .order_by("email")
            .values_list("email", flat=True)
        ) == [
            "c1@g.example",
            "c2@a.example",
            "c2@g.example",
        ]
        counted = Opportunity.objects.annotate(contacts_count=Count("contacts")).order_by("name")
        assert [(d.name, d.contacts_count) for d in counted] == [("deal a", 1), ("deal g", 1)]
        counted_contacts = Contact.objects.annotate(deals=Count("opportunities")).filter(deals__gt=0)
        assert counted_contacts.count() == 2

    def test_prefetching_a_list_is_one_query(
        self, two_tenants: dict[str, Any], django_assert_num_queries: Any
    ) -> None:
        with django_assert_num_queries(3):
            deals = list(Opportunity.objects.prefetch_related("contacts", "companies").order_by("name"))
            assert [[c.email for c in d.contacts.all()] for d in deals] == [
                ["c1@a.example"],
                ["c1@g.example"],
            ]
            assert [[k.name for k in d.companies.all()] for d in deals] == [["company a"], ["company g"]]

    def test_an_id_whose_row_has_not_arrived_joins_once_it_does(self, client: Any) -> None:
        fields = {"contacts": [reference("genericContact", "c9")]}
        send(client, opportunity_event(remote_id="d1", fields=fields))
        deal = Opportunity.objects.get()
        assert list(deal.contacts.all()) == []
        arrived = contact(ACME, "c9", "late@a.example")
        contact(GLOBEX, "c9", "other@g.example")
        assert list(deal.contacts.all()) == [arrived]

    def test_a_newer_list_replaces_an_older_changes_none_a_partial_update_keeps_it(self, client: Any) -> None:
        for remote_id in ("c1", "c2", "c3"):
            contact(ACME, remote_id, f"{remote_id}@a.example")

        def emails() -> list[str]:
            return sorted(Opportunity.objects.get().contacts.values_list("email", flat=True))

        def listing(*ids: str) -> dict[str, Any]:
            return {"contacts": [reference("genericContact", remote_id) for remote_id in ids]}

        send(client, opportunity_event(remote_id="d1", fields=listing("c1", "c2"), updated_at=at(2)))
        assert emails() == ["c1@a.example", "c2@a.example"]
        send(client, opportunity_event("updated", "d1", fields=listing("c2", "c3"), updated_at=at(4)))
        assert emails() == ["c2@a.example", "c3@a.example"]
        send(client, opportunity_event("updated", "d1", fields=listing("c1"), updated_at=at(3)))  # older
        assert emails() == ["c2@a.example", "c3@a.example"]
        send(client, opportunity_event("updated", "d1", fields={"name": "renamed"}, updated_at=at(5)))
        assert emails() == ["c2@a.example", "c3@a.example"]
        send(client, opportunity_event("updated", "d1", fields={"contacts": None}, updated_at=at(6)))
        assert emails() == []
        send(client, opportunity_event("updated", "d1", fields=listing("c3"), updated_at=at(7)))
        send(client, opportunity_event("updated", "d1", fields={"contacts": []}, updated_at=at(8)))
        assert emails() == []


class TestEngagements:
    def test_engagement_relations_stay_in_the_tenant(self, client: Any, two_tenants: dict[str, Any]) -> None:
        for tenant, letter in ((ACME, "a"), (GLOBEX, "g")):
            fields = {
                "type": "call",
                "title": f"call {letter}",
                "startedAt": f"2025-03-0{1 if letter == 'a' else 2}T09:00:00.000Z",
                "owner": reference("genericUser", "u1"),
                "users": [reference("genericUser", "u1")],
                "contacts": [reference("genericContact", "c2")],
                "companies": [reference("genericCompany", "k1")],
                "opportunities": [reference("crmOpportunity", "d1")],
            }
            send(client, engagement_event(remote_id="e1", fields=fields), tenant)
        for letter, deal in two_tenants.items():
            call = Engagement.objects.get(title=f"call {letter}")
            assert call.crm_owner.email == f"owner@{letter}.example"
            assert [u.email for u in call.users.all()] == [f"owner@{letter}.example"]
            assert [c.email for c in call.contacts.all()] == [f"c2@{letter}.example"]
            assert [k.name for k in call.companies.all()] == [f"company {letter}"]
            assert list(call.opportunities.all()) == [deal]
            assert list(deal.engagements.all()) == [call]
        owner = CrmUser.objects.get(**on(GLOBEX))
        assert [e.title for e in owner.owned_engagements.all()] == ["call g"]
        assert [e.title for e in owner.engagements.all()] == ["call g"]
        assert [e.title for e in Contact.objects.get(**on(ACME), remote_id="c2").engagements.all()] == [
            "call a"
        ]
        assert [e.title for e in Company.objects.get(**on(ACME)).engagements.all()] == ["call a"]
        last = Opportunity.objects.annotate(last_call=Max("engagements__started_at")).order_by("name")
        assert [d.last_call.day for d in last] == [1, 2]
        assert list(Opportunity.objects.exclude(engagements__title="call a")) == [two_tenants["g"]]

    def test_a_pair_listed_on_either_side_is_read_once_and_goes_when_neither_lists_it(
        self, client: Any
    ) -> None:
        call = {"type": "call", "startedAt": "2025-03-01T09:00:00.000Z"}
        send(client, engagement_event(remote_id="e1", fields=call, updated_at=at(2)))
        send(
            client,
            opportunity_event(remote_id="d1", fields={"engagements": [reference("crmEngagement", "e1")]}),
        )
        listing = {**call, "opportunities": [reference("crmOpportunity", "d1")]}
        send(client, engagement_event("updated", "e1", fields=listing, updated_at=at(3)))
        send(client, engagement_event(remote_id="e2", fields=listing, updated_at=at(3)))
        deal = Opportunity.objects.get()
        assert sorted(e.remote_id for e in deal.engagements.all()) == ["e1", "e2"]
        assert Opportunity.objects.annotate(n=Count("engagements")).get().n == 2
        e1 = Engagement.objects.get(remote_id="e1")
        assert list(e1.opportunities.all()) == [deal]
        # The engagement drops the deal; the deal still lists it: the pair stays.
        send(client, engagement_event("updated", "e1", fields={"opportunities": []}, updated_at=at(4)))
        assert sorted(e.remote_id for e in deal.engagements.all()) == ["e1", "e2"]
        # Neither lists it now: it goes. e2, which the engagement lists, stays.
        send(client, opportunity_event("updated", "d1", fields={"engagements": []}, updated_at=at(28)))
        assert [e.remote_id for e in deal.engagements.all()] == ["e2"]
        assert EngagementOpportunity.objects.count() == 1


def test_refs_name_the_connection_unambiguously() -> None:
    assert tenant_ref("a|", "b", "c") != tenant_ref("a", "|b", "c")
    assert tenant_ref("hubspot", "tenant_1", "42") == "7:hubspot|8:tenant_1|42"
    deal = OpportunityFactory(connector_id="pipedrive", owner_id="t", remote_id="é1", stage_id="s")
    stored = Opportunity.objects.values_list("ref", "stage_ref").get(pk=deal.pk)
    assert stored == (tenant_ref("pipedrive", "t", "é1"), tenant_ref("pipedrive", "t", "s"))


def test_factories_write_the_pairs_of_their_lists() -> None:
    deal = OpportunityFactory(remote_id="d1", contact_ids=["c1"])
    call = EngagementFactory(opportunity_ids=["d1"], contact_ids=["c1"])
    mine = contact(ACME, "c1", "c1@a.example")
    contact(GLOBEX, "c1", "c1@g.example")
    assert list(deal.contacts.all()) == [mine]
    assert list(deal.engagements.all()) == [call]
    assert list(mine.engagements.all()) == [call]
