"""The admin of the mirrored resources: one read-only list and change page per Morph model."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from morph_webhooks.testing.factories import OpportunityFactory
from tests.helpers import T0, admin_url, filter_titles, listed

pytestmark = pytest.mark.django_db

OPPORTUNITIES = "admin:morph_webhooks_opportunity_changelist"


def test_opportunity_columns(admin_client):
    OpportunityFactory(name="Big", amount=Decimal("12500"), currency="EUR")
    OpportunityFactory(name="Precise", amount=Decimal("0.125"), currency="USD")
    OpportunityFactory(name="Unpriced", amount=None, currency="")  # must not break the page
    OpportunityFactory(name="Gone", deleted_at=T0)

    content = admin_client.get(reverse(OPPORTUNITIES)).content.decode()

    assert "12,500.00 EUR" in content
    assert "0.125 USD" in content
    assert content.count('alt="True"') == 1  # the "deleted" column of "Gone"


def test_opportunity_ordering_is_latest_update_first(admin_client):
    old = OpportunityFactory(remote_updated_at=T0)
    new = OpportunityFactory(remote_updated_at=T0 + timedelta(days=1))

    assert listed(admin_client, OPPORTUNITIES) == [new, old]


def test_opportunity_filters_and_search(admin_client):
    won = OpportunityFactory(name="Won deal", stage_id="stage_won", remote_id="opp_won")
    open_ = OpportunityFactory(name="Open deal", connector_id="pipedrive", pipeline_id="pipeline_b")
    gone = OpportunityFactory(name="Gone deal", deleted_at=T0)

    assert filter_titles(admin_client, OPPORTUNITIES) == [
        "connector id",
        "stage id",
        "pipeline id",
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
