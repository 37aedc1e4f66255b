"""How a project tests its own receivers with morph_webhooks.testing: the README's example, run.

The receiver below stands for one in the project's code; the test after it is the one the
README shows, and the last test keeps the two identical.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.db import transaction

from morph_webhooks.models import Engagement
from morph_webhooks.signals import opportunity_stage_changed, opportunity_updated
from morph_webhooks.testing import (
    engagement_event,
    morph_headers,
    opportunity_event,
    post_event,
    reference,
    resource_event,
)
from morph_webhooks.testing.factories import (
    EngagementFactory,
    IdempotencyKeyFactory,
    OpportunityFactory,
    WorkspaceFactory,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def announce_won_deals(sender: Any, instance: Any, event: Any, created: bool, **kwargs: Any) -> None:
    if "stage_id" in event.changes and instance.stage_id == "stage_won":
        subject = f"Won: {instance.name}"
        transaction.on_commit(lambda: mail.send_mail(subject, "", None, ["sales@example.com"]))


@pytest.fixture(autouse=True)
def receiver() -> Iterator[None]:
    opportunity_updated.connect(announce_won_deals)
    yield
    opportunity_updated.disconnect(announce_won_deals)


@pytest.mark.django_db
def test_a_won_deal_is_announced_once(client, django_capture_on_commit_callbacks, mailoutbox):
    deal = OpportunityFactory(name="Acme renewal", stage_id="stage_negotiation")
    won = opportunity_event("updated", deal.remote_id, fields={"stage": reference("crmStage", "stage_won")})
    headers = morph_headers(idempotency_key="event-1")

    with django_capture_on_commit_callbacks(execute=True):
        first = post_event(client, won, headers=headers)
        again = post_event(client, won, headers=headers)  # Morph delivers at least once

    assert first.json() == {"status": "processed"}
    assert again.json() == {"status": "duplicate"}
    assert [message.subject for message in mailoutbox] == ["Won: Acme renewal"]


def celebrate_won_deals(sender, instance, stage, **kwargs):
    if stage is not None and stage.type == "WON":
        subject = f"Won: {instance.name} ({stage.name})"
        transaction.on_commit(lambda: mail.send_mail(subject, "", None, ["sales@example.com"]))


@pytest.mark.django_db
def test_the_stage_changed_example_announces_a_deal_moving_to_a_won_stage(
    client, django_capture_on_commit_callbacks, mailoutbox
):
    opportunity_stage_changed.connect(celebrate_won_deals)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            for remote_id, name, kind in [("s1", "Negotiation", "OPEN"), ("s9", "Signed", "WON")]:
                stage = resource_event("crmStage", "created", remote_id, fields={"name": name, "type": kind})
                post_event(client, stage)
            deal = OpportunityFactory(name="Acme renewal", stage_id="s1")
            post_event(client, opportunity_event("updated", deal.remote_id, fields={"stage": "s9"}))
    finally:
        opportunity_stage_changed.disconnect(celebrate_won_deals)

    assert [message.subject for message in mailoutbox] == ["Won: Acme renewal (Signed)"]


@pytest.mark.django_db
def test_factories_match_the_events_the_helpers_build(client):
    deleted = OpportunityFactory(deleted=True)
    assert deleted.is_deleted and not OpportunityFactory().is_deleted

    # A handled key makes a delivery carrying it a duplicate.
    IdempotencyKeyFactory(key="seen")
    response = post_event(client, opportunity_event(), headers=morph_headers("seen"))
    assert response.json() == {"status": "duplicate"}

    # A factory-made opportunity is older than the default event, which therefore applies to it.
    response = post_event(client, opportunity_event("updated", deleted.remote_id, fields={"name": "Back"}))
    assert response.json() == {"status": "processed"}
    deleted.refresh_from_db()
    assert (deleted.name, deleted.is_deleted) == ("Back", False)


@pytest.mark.django_db
def test_engagement_and_workspace_factories_match_the_events_the_helpers_build(client):
    call = EngagementFactory(deleted=True, remote_id="call_old")  # not the default event's call_1
    assert call.is_deleted and (call.type, call.crm_owner_id) == ("call", "user_42")
    assert WorkspaceFactory().name == "Sales" and WorkspaceFactory().pk == WorkspaceFactory().pk

    # The default event is newer than a factory-made engagement: it applies, and restores it.
    response = post_event(client, engagement_event("updated", call.remote_id))
    assert response.json() == {"status": "processed"}
    call.refresh_from_db()
    assert (call.title, call.opportunity_ids, call.is_deleted) == ("Renewal call", ["opp_1"], False)
    assert post_event(client, engagement_event()).json() == {"status": "processed"}
    assert Engagement.objects.get(remote_id="call_1").contact_ids == ["contact_1"]


def test_without_factory_boy_the_factories_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "factory.declarations", None)  # None: "not installed"
    monkeypatch.delitem(sys.modules, "morph_webhooks.testing.factories")

    with pytest.raises(
        ImportError, match=r"needs factory-boy: pip install '/path/to/morph-webhooks\[testing\]'"
    ):
        importlib.import_module("morph_webhooks.testing.factories")


def test_the_readme_shows_this_example() -> None:
    readme = README.read_text()
    for example in (announce_won_deals, test_a_won_deal_is_announced_once, celebrate_won_deals):
        assert inspect.getsource(example) in readme, f"README.md's example differs from {example.__name__}"
