from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.core import mail
from django.utils.log import AdminEmailHandler
from django.views import debug

from morph_webhooks.models import WebhookDelivery
from morph_webhooks.redaction import ExceptionReporter, RedactToken, SafeExceptionReporterFilter, redact
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing import morph_headers, opportunity_event
from morph_webhooks.worker import Worker
from tests.helpers import SECRET, URL, raising_receiver

# Where proxies and browsers repeat the URL, secret included.
URL_HEADERS = {
    "X-Original-URL": f"{URL}?token={SECRET}",
    "X-Forwarded-Uri": f"{URL}?token={SECRET}",
    "Referer": f"https://crm.example.com/?token={SECRET}",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "POST /webhooks/morph/?token=abc&x=1 HTTP/1.1",
            "POST /webhooks/morph/?token=[redacted]&x=1 HTTP/1.1",
        ),
        ("token=abc", "token=[redacted]"),
        (
            "<WSGIRequest: POST '/webhooks/morph/?token=abc'>",
            "<WSGIRequest: POST '/webhooks/morph/?token=[redacted]'>",
        ),
        ("?a=1&amp;token=abc&amp;b=2", "?a=1&amp;token=[redacted]&amp;b=2"),
        ("csrftoken=abc; x_token=abc", "csrftoken=abc; x_token=abc"),
        (f"?%74oken={SECRET}", "?%74oken=[redacted]"),  # Django decodes the name: still the secret
        (f"Bearer {SECRET}", "Bearer [redacted]"),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


def test_redact_masks_the_secrets_configured_now(settings):
    rotated = "rotated secret/0123456789+abc"
    text = f"Bearer {SECRET} ?t={rotated} ?u=rotated%20secret%2F0123456789%2Babc ?v=rotated+secret%2F0123456789%2Babc"
    assert redact(text) == text.replace(SECRET, "[redacted]")

    settings.MORPH_WEBHOOKS = {"SECRETS": [rotated]}

    assert redact(text) == f"Bearer {SECRET} ?t=[redacted] ?u=[redacted] ?v=[redacted]"


class TestRedactToken:
    @pytest.fixture
    def output(self) -> Iterator[io.StringIO]:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(RedactToken())
        logger = logging.getLogger("tests.redaction")
        logger.addHandler(handler)
        yield stream
        logger.removeHandler(handler)

    def test_masks_the_message_and_its_arguments(self, output, rf):
        logger = logging.getLogger("tests.redaction")
        logger.warning('"%s %s %s" %s', "POST", f"{URL}?token={SECRET}", "HTTP/1.1", 200)
        logger.warning("Request %s", rf.post(f"{URL}?token={SECRET}"))

        assert SECRET not in output.getvalue()
        assert f'"POST {URL}?token=[redacted] HTTP/1.1" 200' in output.getvalue()
        assert f"<WSGIRequest: POST '{URL}?token=[redacted]'>" in output.getvalue()

    def test_masks_the_traceback_and_the_stack(self, output):
        logger = logging.getLogger("tests.redaction")
        try:
            raise RuntimeError(f"Change your form to point to example.com{URL}?token={SECRET}")
        except RuntimeError:
            logger.exception("Internal Server Error: %s", URL, stack_info=True)

        assert SECRET not in output.getvalue()
        assert (
            f"RuntimeError: Change your form to point to example.com{URL}?token=[redacted]"
            in output.getvalue()
        )

    def test_masks_the_extra_fields_json_formatters_write(self):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "Morph webhook", (), None)
        record.key, record.status = f"a?token={SECRET}", 401

        assert RedactToken().filter(record) is True

        assert (record.key, record.status) == ("a?token=[redacted]", 401)
        assert record.name == "x" and record.msg == "Morph webhook"

    def test_a_malformed_call_is_left_to_the_handler(self):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", ("one",), None)
        assert RedactToken().filter(record) is True


def report(request: Any, reporter: type[debug.ExceptionReporter], is_email: bool = True) -> str:
    url = request.get_full_path()  # noqa: F841 - a local variable the HTML report shows
    try:
        raise RuntimeError(f"failed at {url}")
    except RuntimeError:
        made = reporter(request, *sys.exc_info(), is_email=is_email)
        return made.get_traceback_text() + made.get_traceback_html()


def test_the_exception_reporter_and_filter_mask_the_secret(settings, rf):
    request = rf.post(f"{URL}?token={SECRET}", headers={**URL_HEADERS, "Authorization": f"Bearer {SECRET}"})
    assert SECRET in report(request, debug.ExceptionReporter)  # what Django shows on its own
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = "morph_webhooks.redaction.SafeExceptionReporterFilter"

    shown = report(request, ExceptionReporter)

    assert SECRET not in shown
    assert f"Request URL: http://testserver{URL}?token=[redacted]" in shown
    assert "token = '[redacted]'" in shown  # GET
    assert f"HTTP_X_ORIGINAL_URL = '{URL}?token=[redacted]'" in shown  # META


def test_the_filter_alone_masks_meta_and_local_variables(rf):
    request = rf.post(f"{URL}?token={SECRET}", headers=URL_HEADERS)
    request.exception_reporter_filter = SafeExceptionReporterFilter()

    shown = debug.ExceptionReporter(request, None, None, None).filter  # the one Django picks

    meta = shown.get_safe_request_meta(request)
    assert SECRET not in repr(meta) and meta["QUERY_STRING"] == "token=[redacted]"
    assert (
        repr(shown.cleanse_special_types(request, request)) == f"<WSGIRequest: POST '{URL}?token=[redacted]'>"
    )
    assert repr(shown.cleanse_special_types(request, {"url": URL_HEADERS["Referer"]})) == (
        "{'url': 'https://crm.example.com/?token=[redacted]'}"
    )


@pytest.fixture
def failing_receiver() -> Iterator[None]:
    with raising_receiver(opportunity_created, RuntimeError, "receiver failed"):
        yield


@pytest.fixture
def html_mail_to_admins() -> Iterator[None]:
    """Besides Django's default text e-mail, one with the HTML report attached."""
    handler = AdminEmailHandler(include_html=True)
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


@pytest.mark.django_db
@pytest.mark.usefixtures("failing_receiver", "html_mail_to_admins")
def test_error_mails_of_the_endpoint_never_show_the_secret(client, settings, mailoutbox):
    # No DEFAULT_EXCEPTION_REPORTER(_FILTER): the endpoint protects itself.
    # Django 6 takes addresses; 5.2 wants (name, address) pairs, which 6 deprecates.
    settings.ADMINS = ["ops@example.com"] if django.VERSION >= (6,) else [("Ops", "ops@example.com")]
    response = client.post(
        f"{URL}?token={SECRET}&page=1",
        data=json.dumps(opportunity_event()),
        content_type="application/json",
        headers={**morph_headers(), **URL_HEADERS},
    )

    assert response.status_code == 500
    assert len(mailoutbox) == 2
    for message in mailoutbox:
        assert isinstance(message, mail.EmailMultiAlternatives)
        parts = [message.subject, message.body, *(content for content, _ in message.alternatives)]
        parts += [str(attachment) for attachment in message.attachments]
        assert SECRET not in "".join(str(part) for part in parts)
        assert f"{URL}?token=[redacted]&page=1" in message.body
    html = [str(content) for message in mailoutbox for content, _ in message.alternatives]
    assert len(html) == 1 and "token=[redacted]" in html[0]


@pytest.mark.parametrize("name", ["django.server", "django.request"])
def test_djangos_request_loggers_mask_the_secret_without_configuration(caplog, name):
    # The app's ready() filtered the loggers themselves: every handler gets the masked record.
    with caplog.at_level(logging.INFO, logger=name):
        logging.getLogger(name).warning('"%s" %s', f"POST /webhooks/morph/?token={SECRET} HTTP/1.1", "401")

    assert caplog.records[-1].getMessage() == '"POST /webhooks/morph/?token=[redacted] HTTP/1.1" 401'
    assert SECRET not in caplog.text


@pytest.mark.urls("tests.urls")
@pytest.mark.parametrize("invalid", [{"SECRETS": 123}, {"API_SECRET": None}])
def test_an_invalid_setting_breaks_no_page_of_the_project_through_djangos_request_loggers(
    client, settings, caplog, invalid
):
    # The filter is on Django's own loggers, which log every 404 of the whole project: a setting
    # it cannot read (manage.py check reports it) must not turn those pages into crashes.
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, **invalid}

    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get(f"/no-such-page/?token={SECRET}")

    assert response.status_code == 404
    assert caplog.records[-1].getMessage() == "Not Found: /no-such-page/"
    logging.getLogger("django.server").warning('"%s" %s', f"GET /?token={SECRET} HTTP/1.1", "404")
    assert caplog.records[-1].getMessage() == '"GET /?token=[redacted] HTTP/1.1" 404'


@pytest.mark.django_db
@pytest.mark.parametrize("processing", ["sync", "deferred"])
def test_a_receivers_exception_is_stored_and_shown_with_the_credentials_masked(
    send, settings, admin_client, processing
):
    api_secret = "api-secret-0123456789abcdef"
    settings.MORPH_WEBHOOKS = {
        **settings.MORPH_WEBHOOKS,
        "API_SECRET": api_secret,
        "PROCESSING": processing,
        "QUEUE": "deliveries",
    }
    message = f"could not call https://crm.example.com/?token={SECRET} nor use {api_secret}"
    with raising_receiver(opportunity_created, RuntimeError, message):
        send(opportunity_event(), key="k1")
        Worker(until_empty=True).run()

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == ("failed" if processing == "sync" else "queued")
    assert "RuntimeError: could not call https://crm.example.com/?token=[redacted] nor use [redacted]" in (
        delivery.error
    )
    page = admin_client.get(f"/admin/morph_webhooks/webhookdelivery/{delivery.pk}/change/")
    overview = admin_client.get("/admin/morph_webhooks/webhookdelivery/overview/")
    shown = [page.content.decode(), overview.content.decode()]
    # The overview lists failures, not deliveries still queued for a retry.
    assert all("[redacted]" in text for text in shown[: 2 if processing == "sync" else 1])
    for text in (delivery.error, *shown):
        assert SECRET not in text and api_secret not in text
