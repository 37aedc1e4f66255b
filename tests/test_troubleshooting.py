"""The troubleshooting page quotes what users see: each quote is produced here, by
the mistake the section attributes it to."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client, override_settings
from django.urls import include, path

from morph_webhooks.management.commands import morph_webhooks_check
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing import morph_headers, opportunity_event, post_event
from tests.docs_pages import page
from tests.helpers import SECRET, raising_receiver

pytestmark = pytest.mark.django_db

ENDPOINT = "/webhooks/morph/"


def troubleshooting() -> str:
    """The page as one line of text: quotes may be wrapped or set in code spans."""
    return " ".join(page("troubleshooting.md").replace("`", "").split())


def answer(response: Any) -> str:
    """The part of an answer the page quotes: the detail, or the field errors of a 400."""
    data = response.json()
    return json.dumps(data["fields"]) if "fields" in data else data["detail"]


def url_without_token(client: Client) -> str:
    return answer(client.post(ENDPOINT, opportunity_event(), "application/json", headers=morph_headers()))


def wrong_secret(client: Client) -> str:
    return answer(post_event(client, opportunity_event(), secret="an-old-secret-0123456789abcdef"))


def curl_form_encoded(client: Client) -> str:
    # curl -d sends application/x-www-form-urlencoded unless told otherwise.
    response = client.post(
        f"{ENDPOINT}?token={SECRET}",
        json.dumps(opportunity_event()),
        "application/x-www-form-urlencoded",
        headers=morph_headers(),
    )
    return answer(response)


def missing_morph_headers(client: Client) -> str:
    return answer(client.post(f"{ENDPOINT}?token={SECRET}", opportunity_event(), "application/json"))


def outside_allowed_networks(client: Client) -> str:
    with override_settings(MORPH_WEBHOOKS={"SECRETS": [SECRET], "ALLOWED_NETWORKS": ["10.0.0.0/8"]}):
        return answer(post_event(client, opportunity_event()))


def connector_not_allowed(client: Client) -> str:
    with override_settings(MORPH_WEBHOOKS={"SECRETS": [SECRET], "ALLOWED_CONNECTORS": ["hubspot"]}):
        return answer(post_event(client, opportunity_event(), headers={"x-conector-id": "pipedrive"}))


def receiver_raises(client: Client) -> str:
    with raising_receiver(opportunity_created, ValueError, "receiver bug"):
        return answer(post_event(client, opportunity_event()))


# A project that includes morph_webhooks.urls itself, rather than with webhook_urls().
urlpatterns = [path("webhooks/morph/", include("morph_webhooks.urls"))]


@override_settings(ROOT_URLCONF=__name__)
def no_trailing_slash(client: Client) -> str:
    # As Morph sends it: the token in the URL, which the redirect carries along.
    response = client.post(
        f"{ENDPOINT.rstrip('/')}?token={SECRET}",
        opportunity_event(),
        "application/json",
        headers=morph_headers(),
    )
    assert response.status_code == 301
    return f"301 to {response['Location'].replace(SECRET, '...')}"


def no_secret_configured(client: Client) -> str:
    with override_settings(MORPH_WEBHOOKS={}):
        return next(message.msg for message in run_checks() if message.id == "morph_webhooks.E001")


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        (url_without_token, "Missing credentials: pass ?token=<secret> or an Authorization header."),
        (wrong_secret, "Invalid secret."),
        (curl_form_encoded, 'Expected "application/json", got "application/x-www-form-urlencoded".'),
        (missing_morph_headers, '"x-conector-id": ["This field is required."]'),
        (outside_allowed_networks, "Requests from this address are not accepted."),
        (connector_not_allowed, "Connector 'pipedrive' is not accepted here."),
        (receiver_raises, "ValueError while processing the event."),
        (no_trailing_slash, f"301 to {ENDPOINT}?token=..."),
        (no_secret_configured, "No secret is configured for the Morph webhook endpoint."),
    ],
)
def test_the_quoted_error_is_what_the_mistake_produces(
    client: Client, mistake: Callable[[Client], str], expected: str
) -> None:
    assert expected in mistake(client)
    assert expected in troubleshooting()


@pytest.mark.parametrize(
    "message",
    [
        morph_webhooks_check.APP_PROBLEMS["authentication_failed", "token"],
        morph_webhooks_check.SERVER_PROBLEMS[400],
        "this database has no record of the request",
        "Still queued after 30 s: no worker is processing queue 'default' of task backend 'default'.",
    ],
)
def test_the_check_messages_quoted_are_current(message: str) -> None:
    # What produces each is tested in test_setup_commands and test_example_project.
    assert message in troubleshooting()
