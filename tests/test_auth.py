from __future__ import annotations

import base64
import json
import logging
import time
from datetime import datetime, timezone

import pytest
from django.test import override_settings
from standardwebhooks import Webhook

from morph_webhooks.checks import check_settings
from morph_webhooks.models import IdempotencyKey, Opportunity, WebhookDelivery
from morph_webhooks.testing import morph_headers, opportunity_event, post_event
from tests.helpers import SECRET, URL, raw_post

pytestmark = pytest.mark.django_db

SIGNING_SECRET = "whsec_" + base64.b64encode(b"a signing key of thirty-two byte").decode()
OTHER_SIGNING_SECRET = "whsec_" + base64.b64encode(b"another key, used during rotation").decode()


def signed_headers(
    secret: str, body: bytes, *, message_id: str = "msg_1", at: float | None = None
) -> dict[str, str]:
    """Signed by the reference implementation, so the two agree on the format."""
    timestamp = datetime.fromtimestamp(at if at is not None else time.time(), tz=timezone.utc)
    signature = Webhook(secret).sign(message_id, timestamp, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }


class TestStandardWebhooksSignatures:
    @pytest.fixture(autouse=True)
    def signing(self, settings):
        settings.MORPH_WEBHOOKS = {"SIGNING_SECRETS": [SIGNING_SECRET, OTHER_SIGNING_SECRET]}

    @pytest.mark.parametrize("secret", [SIGNING_SECRET, OTHER_SIGNING_SECRET])
    def test_signature_from_the_reference_implementation_is_accepted(self, client, secret):
        body = json.dumps(opportunity_event()).encode()
        response = raw_post(client, body, **signed_headers(secret, body))

        assert response.json() == {"status": "processed"}

    def test_post_event_signs_when_only_signing_secrets_are_set(self, client):
        response = post_event(client, opportunity_event())

        assert response.json() == {"status": "processed"}
        # The log keeps which message it was, never its signature: that could be replayed.
        headers = WebhookDelivery.objects.get().headers
        assert "webhook-id" in headers and "webhook-signature" not in headers

    def test_our_signing_agrees_with_the_reference_one(self):
        from morph_webhooks.auth import signature_headers

        body = b'{"any": "bytes"}'
        Webhook(SIGNING_SECRET).verify(body, signature_headers(SIGNING_SECRET, "msg_1", body))

    def test_our_verification_agrees_with_the_reference_one(self):
        from morph_webhooks.auth import verify_signature

        body = b'{"any": "bytes"}'
        headers = signed_headers(SIGNING_SECRET, body)
        Webhook(SIGNING_SECRET).verify(body, headers)  # the reference accepts it...
        verify_signature(headers, body)  # ...and so do we

    def test_one_of_several_signatures_is_enough(self, client):
        body = json.dumps(opportunity_event()).encode()
        headers = signed_headers(SIGNING_SECRET, body)
        headers["webhook-signature"] = "v1,AAAA v2,whatever " + headers["webhook-signature"]
        assert raw_post(client, body, **headers).status_code == 200

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda h, b: (h, b.replace(b"Acme", b"Evil")),  # body changed after signing
            lambda h, b: ({**h, "webhook-id": "msg_2"}, b),  # id changed
            lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
            lambda h, b: ({**h, "webhook-signature": "v1,not-base64!"}, b),
            lambda h, b: ({**h, "webhook-signature": h["webhook-signature"].replace("v1,", "v2,")}, b),
            lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b),
            lambda h, b: ({**h, "webhook-timestamp": "soon"}, b),
        ],
    )
    def test_tampered_requests_are_401_and_store_nothing(self, client, tamper):
        body = json.dumps(opportunity_event()).encode()
        headers, body = tamper(signed_headers(SIGNING_SECRET, body), body)

        assert raw_post(client, body, **headers).status_code == 401
        assert WebhookDelivery.objects.count() == Opportunity.objects.count() == 0

    @pytest.mark.parametrize("timestamp", ["²", "¹²³", "1" * 10_000, "-1", "+1", " 1"])
    def test_timestamp_not_in_ascii_digits_is_401_not_an_error(self, client, caplog, timestamp):
        # "²".isdigit() is true and int("²") raises; int() refuses over 4,300 digits.
        body = json.dumps(opportunity_event()).encode()
        headers = {**signed_headers(SIGNING_SECRET, body), "webhook-timestamp": timestamp}

        response = raw_post(client, body, **headers)

        assert response.status_code == 401
        assert response.json()["detail"] == "webhook-timestamp is not a Unix timestamp."
        assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []

    def test_a_signed_request_is_accepted_once(self, client):
        body = json.dumps(opportunity_event()).encode()
        signed = signed_headers(SIGNING_SECRET, body)
        first = raw_post(client, body, **signed)
        # Whoever saw the request replays it into another tenant, under a new idempotency key:
        # neither header is covered by the signature.
        replayed = raw_post(client, body, **{**morph_headers(owner_id="tenant_2"), **signed})

        assert first.json() == {"status": "processed"}
        assert replayed.status_code == 401
        assert "already received" in replayed.json()["detail"]
        assert list(Opportunity.objects.values_list("owner_id", flat=True)) == ["tenant_1"]
        assert WebhookDelivery.objects.count() == 1

    def test_a_retry_signed_again_with_the_same_id_is_accepted(self, client):
        # Standard Webhooks senders retry a delivery with its webhook-id and a new timestamp.
        body = json.dumps(opportunity_event()).encode()
        key = morph_headers()["x-idempotency-key"]
        first = raw_post(
            client,
            body,
            **{**signed_headers(SIGNING_SECRET, body, at=time.time() - 10), "x-idempotency-key": key},
        )
        retry = raw_post(client, body, **{**signed_headers(SIGNING_SECRET, body), "x-idempotency-key": key})

        assert (first.json(), retry.json()) == ({"status": "processed"}, {"status": "duplicate"})

    def test_signed_by_an_unknown_key_is_401(self, client):
        body = json.dumps(opportunity_event()).encode()
        unknown = "whsec_" + base64.b64encode(b"someone else's key").decode()
        assert raw_post(client, body, **signed_headers(unknown, body)).status_code == 401

    @pytest.mark.parametrize("skew", [-301, 301])
    def test_outside_the_tolerance_window_is_401(self, client, skew):
        body = json.dumps(opportunity_event()).encode()
        response = raw_post(client, body, **signed_headers(SIGNING_SECRET, body, at=time.time() + skew))

        assert response.status_code == 401
        assert "tolerance" in response.json()["detail"]

    def test_tolerance_is_configurable(self, client, settings):
        settings.MORPH_WEBHOOKS = {"SIGNING_SECRETS": [SIGNING_SECRET], "SIGNATURE_TOLERANCE": 3600}
        body = json.dumps(opportunity_event()).encode()
        assert (
            raw_post(client, body, **signed_headers(SIGNING_SECRET, body, at=time.time() - 1800)).status_code
            == 200
        )

    def test_unsigned_request_is_401(self, client):
        assert raw_post(client, json.dumps(opportunity_event()).encode()).status_code == 401


class TestBasicAuth:
    def credentials(self, user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def test_secret_as_basic_password(self, client):
        response = raw_post(
            client, json.dumps(opportunity_event()).encode(), Authorization=self.credentials("morph", SECRET)
        )
        assert response.status_code == 200

    @pytest.mark.parametrize(
        "header",
        [
            "Basic " + base64.b64encode(b"morph:wrong").decode(),
            "Basic %%%",
            "Basic " + base64.b64encode(SECRET.encode()).decode(),
        ],
    )
    def test_wrong_basic_credentials_are_401(self, client, header):
        assert (
            raw_post(client, json.dumps(opportunity_event()).encode(), Authorization=header).status_code
            == 401
        )


class TestAllowedNetworks:
    def test_request_from_an_allowed_network(self, client, settings):
        settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "ALLOWED_NETWORKS": ["10.0.0.0/8", "127.0.0.0/8"]}
        assert (
            raw_post(
                client, json.dumps(opportunity_event()).encode(), path=f"{URL}?token={SECRET}"
            ).status_code
            == 200
        )

    def test_request_from_elsewhere_is_403_and_stores_nothing(self, client, settings):
        settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "ALLOWED_NETWORKS": ["10.0.0.0/8"]}
        response = raw_post(client, json.dumps(opportunity_event()).encode(), path=f"{URL}?token={SECRET}")

        assert response.status_code == 403
        assert WebhookDelivery.objects.count() == 0

    def test_forwarded_for_is_ignored_unless_configured(self, client, settings):
        settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "ALLOWED_NETWORKS": ["10.0.0.0/8"]}
        response = raw_post(
            client,
            json.dumps(opportunity_event()).encode(),
            path=f"{URL}?token={SECRET}",
            **{"X-Forwarded-For": "10.1.2.3"},
        )
        assert response.status_code == 403

    def test_forwarded_for_added_by_a_trusted_proxy(self, client, settings):
        settings.MORPH_WEBHOOKS = {
            "SECRETS": [SECRET],
            "ALLOWED_NETWORKS": ["10.0.0.0/8"],
            "FORWARDED_PROXIES": 1,
        }
        # The caller forged the first entry; the proxy appended the real address last.
        allowed = raw_post(
            client,
            json.dumps(opportunity_event()).encode(),
            path=f"{URL}?token={SECRET}",
            **{"X-Forwarded-For": "192.0.2.1, 10.1.2.3"},
        )
        forged = raw_post(
            client,
            json.dumps(opportunity_event()).encode(),
            path=f"{URL}?token={SECRET}",
            **{"X-Forwarded-For": "10.1.2.3, 192.0.2.1"},
        )

        assert (allowed.status_code, forged.status_code) == (200, 403)
        assert WebhookDelivery.objects.get().remote_addr == "10.1.2.3"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"SIGNING_SECRETS": [SIGNING_SECRET]}, []),
        ({"SIGNING_SECRETS": ["whsec_!!!"]}, ["morph_webhooks.E004"]),
        ({"SECRETS": [SECRET], "ALLOWED_NETWORKS": ["10.0.0.0/8", "not-a-network"]}, ["morph_webhooks.E003"]),
        ({"SECRETS": [SECRET], "ALLOWED_OWNERS": "tenant_1"}, []),
        ({"SECRETS": [SECRET], "ALLOWED_CONNECTORS": [1]}, ["morph_webhooks.E002"]),
    ],
)
def test_checks_for_security_settings(settings, value, expected):
    settings.MORPH_WEBHOOKS = value
    assert [message.id for message in check_settings()] == expected


@pytest.mark.parametrize(
    ("configured", "signed", "problem"),
    [
        (
            {"SECRETS": [SECRET], "ALLOWED_NETWORKS": ["10.0.0.0/8", "not-a-network"]},
            False,
            "MORPH_WEBHOOKS['ALLOWED_NETWORKS'] has an invalid network: 'not-a-network'.",
        ),
        (
            {"SIGNING_SECRETS": [SIGNING_SECRET, "whsec_!!!"]},
            True,
            "MORPH_WEBHOOKS['SIGNING_SECRETS'][1] is not a Standard Webhooks secret.",
        ),
        (
            # An empty key would verify anyone's signature.
            {"SIGNING_SECRETS": ["whsec_"]},
            True,
            "MORPH_WEBHOOKS['SIGNING_SECRETS'][0] is not a Standard Webhooks secret.",
        ),
    ],
)
def test_an_invalid_entry_is_answered_and_logged_once_naming_the_setting(
    client, settings, caplog, configured, signed, problem
):
    # manage.py check was not run: the request finds the setting wrong.
    settings.MORPH_WEBHOOKS = configured
    body = json.dumps(opportunity_event()).encode()
    with caplog.at_level(logging.ERROR, logger="morph_webhooks.views"):
        responses = [
            raw_post(
                client,
                body,
                path=URL if signed else f"{URL}?token={SECRET}",
                **(signed_headers(SIGNING_SECRET, body, message_id=f"msg_{n}") if signed else {}),
            )
            for n in range(3)
        ]

    assert [response.status_code for response in responses] == [500] * 3
    assert {json.dumps(response.json()) for response in responses} == {
        json.dumps({"error": "improperly_configured", "detail": problem})
    }
    logged = [record.getMessage() for record in caplog.records if record.name == "morph_webhooks.views"]
    assert len(logged) == 1 and problem in logged[0]
    assert [message.id for message in check_settings()] == [
        "morph_webhooks.E003" if "NETWORKS" in problem else "morph_webhooks.E004"
    ]
    assert not Opportunity.objects.exists()


@pytest.mark.parametrize("value", ["false", "False", "0", 1])
def test_a_non_boolean_opt_out_never_opens_the_endpoint(client, settings, value):
    # From an environment variable, "false" is a non-empty string: bool() of it is True.
    settings.MORPH_WEBHOOKS = {"ALLOW_UNAUTHENTICATED": value}

    response = raw_post(client, json.dumps(opportunity_event()).encode())

    assert response.status_code == 500
    assert response.json() == {
        "error": "improperly_configured",
        "detail": f"MORPH_WEBHOOKS['ALLOW_UNAUTHENTICATED'] must be True or False, not {value!r}.",
    }
    assert not Opportunity.objects.exists()
    assert not WebhookDelivery.objects.exists()


class TestAuthentication:
    def test_bearer_header(self, client):
        response = raw_post(client, json.dumps(opportunity_event()), Authorization=f"Bearer {SECRET}")
        assert response.status_code == 200

    def test_token_in_url_is_kept_out_of_the_log(self, client):
        response = raw_post(
            client, json.dumps(opportunity_event()), path=f"{URL}?token={SECRET}&source=morph"
        )

        assert response.status_code == 200
        delivery = WebhookDelivery.objects.get()
        assert delivery.path == "/webhooks/morph/?source=morph"
        assert SECRET not in json.dumps(delivery.headers) + delivery.path

    def test_authorization_header_is_kept_out_of_the_log(self, client):
        raw_post(
            client, json.dumps(opportunity_event()), Authorization=f"Bearer {SECRET}", Cookie="sessionid=abc"
        )

        headers = WebhookDelivery.objects.get().headers
        assert "authorization" not in headers and "cookie" not in headers
        assert headers["x-conector-id"] == "hubspot"

    @pytest.mark.parametrize(
        "auth",
        [
            {},
            {"Authorization": "Bearer wrong-secret"},
            {"Authorization": f"Basic {SECRET}"},
            {"Authorization": f"Bearer {SECRET}x"},
            {"Authorization": f"Bearer {SECRET[:-1]}"},
        ],
    )
    def test_wrong_or_missing_secret_is_401_and_stores_nothing(self, client, auth):
        response = raw_post(client, json.dumps(opportunity_event()), **auth)

        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"] in ("not_authenticated", "authentication_failed")
        assert (
            WebhookDelivery.objects.count()
            == IdempotencyKey.objects.count()
            == Opportunity.objects.count()
            == 0
        )

    def test_an_authorization_header_is_the_credential_even_with_a_right_token(self, client):
        # One credential per request: a wrong header is not rescued by the query string.
        response = raw_post(
            client,
            json.dumps(opportunity_event()),
            path=f"{URL}?token={SECRET}",
            Authorization="Bearer wrong",
        )

        assert response.status_code == 401
        assert response.json()["error"] == "authentication_failed"

    def test_wrong_token_in_url_is_401(self, client):
        assert raw_post(client, json.dumps(opportunity_event()), path=f"{URL}?token=nope").status_code == 401

    def test_several_secrets_for_rotation(self, client, settings):
        settings.MORPH_WEBHOOKS = {"SECRETS": ["old-secret-0123456789abcdef", "new-secret-0123456789abcdef"]}

        for secret in settings.MORPH_WEBHOOKS["SECRETS"]:
            assert (
                raw_post(
                    client, json.dumps(opportunity_event()), Authorization=f"Bearer {secret}"
                ).status_code
                == 200
            )
        assert (
            raw_post(client, json.dumps(opportunity_event()), Authorization=f"Bearer {SECRET}").status_code
            == 401
        )

    def test_auth_is_checked_before_the_body_is_read(self, client):
        response = raw_post(client, b"not json", content_type="text/plain")
        assert response.status_code == 401
        assert WebhookDelivery.objects.count() == 0

    @override_settings(MORPH_WEBHOOKS={"SECRETS": [], "ALLOW_UNAUTHENTICATED": True})
    def test_explicit_opt_out_accepts_requests_without_secret(self, client):
        assert raw_post(client, json.dumps(opportunity_event())).status_code == 200

    @override_settings(MORPH_WEBHOOKS={"SECRETS": []})
    def test_no_secret_configured_rejects_everything(self, client):
        assert raw_post(client, json.dumps(opportunity_event()), Authorization="Bearer ").status_code == 401
