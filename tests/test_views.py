from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import Resolver404, URLResolver, reverse
from django.urls.resolvers import RegexPattern

from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery
from morph_webhooks.redaction import RECORD_ATTRIBUTES
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing import morph_headers, opportunity_event, post_event, resource_event
from morph_webhooks.urls import webhook_urls
from morph_webhooks.views import HealthView, MetricsView, ReceiveView
from tests.helpers import SECRET, URL, raising_receiver, raw_post

pytestmark = pytest.mark.django_db


# Morph's own example request, placeholders replaced by real values.
MORPH_EXAMPLE = """{
  "event": "crmOpportunity::created",
  "data": {
    "object": "resource",
    "model": "crmOpportunity",
    "id": "19045678901",
    "fields": {
      "name": "Enterprise plan - Globex",
      "amount": 48000,
      "currency": "USD",
      "stage": {"object": "resourceRef", "model": "crmStage", "id": "appointmentscheduled"},
      "pipeline": {"object": "resourceRef", "model": "crmPipeline", "id": "default"},
      "owner": {"object": "resourceRef", "model": "genericUser", "id": "75938210"},
      "contacts": [{"object": "resourceRef", "model": "genericContact", "id": "501"}],
      "companies": [{"object": "resourceRef", "model": "genericCompany", "id": "9001"}],
      "engagements": [{"object": "resourceRef", "model": "genericEngagement", "id": "e-77"}]
    },
    "createdAt": "2025-03-06T09:05:04.596Z",
    "updatedAt": "2025-03-06T09:15:04.596Z",
    "rawResource": null,
    "warnings": []
  }
}"""


def test_morph_example_request_is_stored(client):
    response = raw_post(
        client,
        MORPH_EXAMPLE,
        path=f"{URL}?token={SECRET}",
        **{
            "x-conector-id": "hubspot",
            "x-owner-id": "acme",
            "x-idempotency-key": "hubspot-19045678901-1741252504596",
        },
    )

    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    opportunity = Opportunity.objects.get()
    assert (opportunity.remote_id, opportunity.name, str(opportunity.amount)) == (
        "19045678901",
        "Enterprise plan - Globex",
        "48000.000000",
    )
    assert (opportunity.stage_id, opportunity.pipeline_id, opportunity.crm_owner_id) == (
        "appointmentscheduled",
        "default",
        "75938210",
    )
    assert (opportunity.contact_ids, opportunity.company_ids, opportunity.engagement_ids) == (
        ["501"],
        ["9001"],
        ["e-77"],
    )
    delivery = WebhookDelivery.objects.get()
    assert json.loads(delivery.body) == json.loads(MORPH_EXAMPLE)
    assert (delivery.status, delivery.http_status, delivery.connector_id, delivery.owner_id) == (
        "processed",
        200,
        "hubspot",
        "acme",
    )
    assert delivery.remote_addr == "127.0.0.1"


def test_connector_header_in_correct_spelling_is_accepted(client):
    headers = morph_headers()
    headers["x-connector-id"] = headers.pop("x-conector-id")
    response = post_event(client, opportunity_event(), headers=headers)

    assert response.status_code == 200
    assert Opportunity.objects.get().connector_id == "hubspot"


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "options"])
def test_only_post_is_allowed(client, method):
    response = getattr(client, method)(f"{URL}?token={SECRET}")

    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "options"])
def test_any_method_without_credentials_is_401(client, method):
    # Authentication comes first, as the table of answers says (docs/reference/answers.md): a stranger learns nothing.
    response = getattr(client, method)(URL)

    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_csrf_is_not_required(client):
    csrf_client = Client(enforce_csrf_checks=True)
    assert post_event(csrf_client, opportunity_event()).status_code == 200


@pytest.mark.parametrize("debug", [True, False])
def test_the_endpoint_without_its_trailing_slash_takes_the_event(client, settings, debug):
    # Morph may be given the URL without it; a redirect would turn its POST into a GET.
    settings.DEBUG = debug

    response = post_event(client, opportunity_event(), path=reverse("morph_webhooks:receive").rstrip("/"))

    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    assert Opportunity.objects.get().remote_id == "opp_1"
    assert reverse("morph_webhooks:receive") == "/webhooks/morph/"


def test_route_name():
    assert reverse("morph_webhooks:receive") == URL


def test_any_accept_header_gets_json(client):
    response = raw_post(
        client, json.dumps(opportunity_event()), Authorization=f"Bearer {SECRET}", Accept="text/html"
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_the_secret_is_masked_in_every_stored_header(client):
    # Proxies pass the original URL on; any header may carry it.
    url = f"{URL}?token={SECRET}&page=1"
    proxies = dict.fromkeys(
        ("X-Forwarded-Uri", "X-Original-URL", "X-Original-URI", "X-Envoy-Original-Path", "X-Custom"), url
    )
    response = raw_post(
        client,
        json.dumps(opportunity_event()),
        path=url,
        Referer=f"https://crm.example.com/?next=%2Fwebhooks%2Fmorph%2F%3Ftoken%3D{SECRET}",
        **proxies,
    )

    assert response.json() == {"status": "processed"}
    delivery = WebhookDelivery.objects.get()
    assert SECRET not in json.dumps(delivery.headers) and SECRET not in delivery.path
    assert delivery.headers["x-original-url"] == f"{URL}?token=[redacted]&page=1"
    assert delivery.headers["x-custom"] == f"{URL}?token=[redacted]&page=1"


def test_non_json_content_type_is_415_and_logged(client):
    response = raw_post(
        client,
        json.dumps(opportunity_event()),
        content_type="application/x-www-form-urlencoded",
        Authorization=f"Bearer {SECRET}",
    )

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert WebhookDelivery.objects.get().status == "rejected"


def test_invalid_event_is_400_logged_and_consumes_no_key(client, send):
    response = send(opportunity_event(fields={"amount": -5}), key="k1")

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_event",
        "fields": {"data.fields.amount": ["Ensure this value is greater than or equal to 0."]},
    }
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.http_status, delivery.idempotency_key) == ("rejected", 400, "k1")
    assert "data.fields.amount" in delivery.error
    assert IdempotencyKey.objects.count() == Opportunity.objects.count() == 0

    # The same key with a valid body is then processed: the rejection did not consume it.
    assert send(opportunity_event(), key="k1").json() == {"status": "processed"}


def test_database_unreachable_is_503_json(client):
    with mock.patch("morph_webhooks.apply.process_event", side_effect=OperationalError("could not connect")):
        response = post_event(client, opportunity_event())

    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert response["Retry-After"]


def test_works_behind_login_required_middleware(client, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.contrib.auth.middleware.LoginRequiredMiddleware"]
    assert post_event(client, opportunity_event()).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_atomic_requests_do_not_wrap_the_endpoint(client, monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)

    with (
        raising_receiver(opportunity_created, RuntimeError, "boom"),
        CaptureQueriesContext(connection) as queries,
    ):
        failed = post_event(client, opportunity_event(), headers={"x-idempotency-key": "k"})

    # Processing owns the outermost transaction (no savepoints inside a request-wide one), and
    # the failure is committed to the log on its own.
    assert failed.status_code == 500
    assert not [q for q in queries.captured_queries if "SAVEPOINT" in q["sql"].upper()]
    assert WebhookDelivery.objects.get().status == "failed"
    assert IdempotencyKey.objects.count() == Opportunity.objects.count() == 0


def test_number_beyond_a_double_is_400_naming_the_field_and_consumes_no_key(send):
    body = json.dumps(opportunity_event(fields={"hs_score": "SCORE"})).replace('"SCORE"', "1e400")
    response = send(body.encode(), key="k1")

    assert response.status_code == 400
    assert response.json()["fields"] == {
        "data.fields.hs_score": ["A number too large to store; send it as a string."]
    }
    assert IdempotencyKey.objects.count() == Opportunity.objects.count() == 0
    assert send(opportunity_event(fields={"hs_score": 1e300}), key="k1").json() == {"status": "processed"}


@pytest.mark.parametrize(
    ("name", "value"),
    [("x-owner-id", "tenant_1,tenant_2"), ("x-idempotency-key", "k1, k2"), ("x-conector-id", "a,b")],
)
def test_header_sent_twice_is_400_naming_it(client, name, value):
    # Django's WSGI handler, like gunicorn, joins repeated header lines with a comma.
    response = post_event(client, opportunity_event(), headers={name: value})

    assert response.status_code == 400
    assert list(response.json()["fields"]) == [name]
    assert Opportunity.objects.count() == 0


# The per-request log line, its values as the record's attributes


LOG_FIELDS = {"outcome", "model", "connector", "owner", "key", "status", "ms"}


def logged(caplog: Any) -> Any:
    [record] = [record for record in caplog.records if record.name == "morph_webhooks.views"]
    return record


def fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in LOG_FIELDS if name != "ms"}


def test_no_log_field_is_named_like_a_log_record_attribute():
    assert not LOG_FIELDS & RECORD_ATTRIBUTES


def test_a_processed_event_is_logged_with_its_fields(send, caplog):
    caplog.set_level("INFO", logger="morph_webhooks")

    send(opportunity_event(), key="k1")

    record = logged(caplog)
    assert fields(record) == {
        "outcome": "processed",
        "model": "crmOpportunity",
        "connector": "hubspot",
        "owner": "tenant_1",
        "key": "k1",
        "status": 200,
    }
    assert isinstance(record.ms, float) and record.ms >= 0
    # The sentence stays as it was.
    assert record.levelname == "INFO"
    assert record.getMessage() == (
        f"Morph webhook 200 processed key='k1' connector='hubspot' owner='tenant_1' {record.ms:.1f}ms"
    )


def test_a_rejected_event_is_logged_with_its_fields(send, caplog):
    caplog.set_level("INFO", logger="morph_webhooks")

    send(resource_event("crmStage", fields={"name": ""}), key="k2")

    record = logged(caplog)
    assert fields(record) == {
        "outcome": "invalid_event",
        "model": "crmStage",
        "connector": "hubspot",
        "owner": "tenant_1",
        "key": "k2",
        "status": 400,
    }
    assert record.levelname == "WARNING"


def test_a_refused_request_keeps_hostile_header_values_as_bounded_values(client, caplog):
    caplog.set_level("INFO", logger="morph_webhooks")
    hostile = "k3\nERROR morph_webhooks.views Morph webhook 200 processed" + "x" * 1000

    response = raw_post(
        client,
        json.dumps(opportunity_event()),
        path=f"{URL}?token=wrong-secret-0123456789abcdef",
        **{"x-idempotency-key": hostile, "x-owner-id": '"}{"status": 200'},
    )

    assert response.status_code == 401
    record = logged(caplog)
    assert (
        fields(record)
        == {
            "outcome": "authentication_failed",
            "model": "",  # the body of a stranger is not read
            "connector": "hubspot",
            "owner": '"}{"status": 200',
            "key": hostile[:255],
            "status": 401,
        }
    )
    assert "\n" not in record.getMessage()


@pytest.mark.parametrize("route", ["webhooks/morph/", "webhooks/morph"])
def test_webhook_urls_puts_the_app_below_its_route_written_with_or_without_its_slash(route):
    # A route written as Morph's dashboard shows the endpoint must not make "webhooks/morphhealth/".
    resolver = URLResolver(RegexPattern(r"^/"), webhook_urls(route))

    assert {path: resolver.resolve(path).func.view_class for path in ENDPOINT_PATHS} == ENDPOINT_PATHS
    with pytest.raises(Resolver404):
        resolver.resolve("/webhooks/morphhealth/")


ENDPOINT_PATHS = {
    "/webhooks/morph/": ReceiveView,
    "/webhooks/morph": ReceiveView,
    "/webhooks/morph/health/": HealthView,
    "/webhooks/morph/metrics/": MetricsView,
}
