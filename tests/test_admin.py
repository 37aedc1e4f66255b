"""The admin pages every model shares (read-only lists and change pages), and the idempotency keys'."""

from __future__ import annotations

import pytest
from django.forms.models import model_to_dict
from django.urls import reverse

from morph_webhooks.models import Outcome
from morph_webhooks.testing.factories import IdempotencyKeyFactory, OpportunityFactory, WebhookDeliveryFactory
from tests.helpers import action_names, admin_url, filter_titles, listed

pytestmark = pytest.mark.django_db

KEYS = "admin:morph_webhooks_idempotencykey_changelist"
FACTORIES = [OpportunityFactory, IdempotencyKeyFactory, WebhookDeliveryFactory]


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


# Idempotency keys


def test_idempotency_key_filter_and_search(admin_client):
    processed = IdempotencyKeyFactory(key="k-processed", remote_id="opp_a")
    stale = IdempotencyKeyFactory(key="k-stale", remote_id="opp_b", outcome=Outcome.STALE)

    assert filter_titles(admin_client, KEYS) == ["connection", "outcome"]

    assert listed(admin_client, KEYS, "outcome=stale") == [stale]
    assert listed(admin_client, KEYS, "q=k-processed") == [processed]
    # By key only: remote_id has no index on this table (the deliveries list searches it).
    assert listed(admin_client, KEYS, "q=opp_b") == []


def test_the_index_lists_the_request_log_after_the_mirrored_resources(admin_client):
    [app] = [
        app
        for app in admin_client.get(reverse("admin:index")).context["app_list"]
        if app["app_label"] == "morph_webhooks"
    ]

    names = [model["name"] for model in app["models"]]
    # The app's own bookkeeping together, after what Morph sent.
    assert names[-2:] == ["Webhook deliveries", "Webhook idempotency keys"]
    assert {"Opportunities", "Stages", "Pipelines", "Contacts", "Companies"} <= set(names[:-2])
