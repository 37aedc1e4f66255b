"""Reading a request's body: within MAX_BODY_SIZE, whatever length it declares or leaves out."""

from __future__ import annotations

import io
import json

import pytest

from morph_webhooks.body import PayloadTooLarge, read_body
from morph_webhooks.models import Opportunity, WebhookDelivery
from morph_webhooks.testing import morph_headers, opportunity_event, post_event
from tests.helpers import SECRET, URL

pytestmark = pytest.mark.django_db


class TestBodySize:
    @pytest.fixture(autouse=True)
    def small_limit(self, settings):
        settings.MORPH_WEBHOOKS = {"SECRETS": [SECRET], "MAX_BODY_SIZE": 2000}

    def test_declared_length_over_the_limit_is_413(self, client):
        response = post_event(client, opportunity_event(rawResource={"padding": "x" * 3000}))

        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.http_status, delivery.body) == ("rejected", 413, "")
        assert Opportunity.objects.count() == 0

    def test_undeclared_length_is_read_only_up_to_the_limit(self, rf):
        request = rf.generic("POST", URL, content_type="application/json")
        request.META["CONTENT_LENGTH"] = ""
        request._stream = stream = io.BytesIO(b"x" * 10_000)

        with pytest.raises(PayloadTooLarge):
            read_body(request)
        assert stream.tell() == 2001

    @pytest.mark.parametrize("declared", ["²", "1" * 5000])
    def test_declared_length_that_is_no_number_is_not_trusted(self, rf, declared):
        # "²".isdigit() is true and int("²") raises; int() refuses over 4,300 digits.
        request = rf.generic("POST", URL, content_type="application/json")
        request.META["CONTENT_LENGTH"] = declared
        request._stream = io.BytesIO(b"{}")

        assert read_body(request) == b"{}"

    def test_body_within_the_limit_is_accepted(self, client):
        assert post_event(client, opportunity_event()).status_code == 200


def test_chunked_body_without_length_is_411(client):
    response = client.post(
        URL,
        data=json.dumps(opportunity_event()),
        content_type="application/json",
        headers={**morph_headers(), "Authorization": f"Bearer {SECRET}"},
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )

    assert response.status_code == 411
    assert response.json()["error"] == "length_required"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.http_status) == ("rejected", 411)


@pytest.mark.parametrize(("size", "status"), [(400, 200), (5000, 413)])
def test_chunked_body_is_read_within_the_limit_where_the_server_ends_the_stream(
    client, settings, size, status
):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "MAX_BODY_SIZE": 1000}
    payload = opportunity_event(fields={"name": "x"})
    body = json.dumps(payload).encode()
    body += b" " * (size - len(body))
    stream = io.BytesIO(body)
    response = client.post(
        URL,
        data=b"",
        content_type="application/json",
        headers={**morph_headers(), "Authorization": f"Bearer {SECRET}"},
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": stream, "wsgi.input_terminated": True},
    )

    assert response.status_code == status
    # Never more than the limit and one byte is read, however long the body.
    assert stream.tell() == min(size, 1001)
