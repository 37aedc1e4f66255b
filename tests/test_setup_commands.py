"""morph_webhooks_url and morph_webhooks_check, against live servers on 127.0.0.1.

Each check test starts its own server inside its settings, as some of them (SECURE_SSL_REDIRECT)
are read once when the server's middleware is built.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import pytest
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import set_script_prefix
from pytest_django.live_server_helper import LiveServer

from morph_webhooks.management.commands import morph_webhooks_check
from morph_webhooks.models import Connection, IdempotencyKey, Opportunity, WebhookDelivery
from morph_webhooks.signals import event_received
from morph_webhooks.testing import opportunity_event
from tests.helpers import free_port, raising_receiver

SECRET = "test-secret-0123456789abcdef"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def run(command: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def fails(command: str, *args: str) -> str:
    with pytest.raises(CommandError) as error:
        run(command, *args)
    return str(error.value)


def webhooks(**changes: Any) -> Any:
    return override_settings(MORPH_WEBHOOKS={"SECRETS": [SECRET], **changes})


@contextmanager
def serving(**settings: Any) -> Iterator[str]:
    """A live server of the test project, started with ``settings``; yields its site URL."""
    # The live server serves static files and needs to know where (tests.settings has no STATIC_URL).
    with override_settings(STATIC_URL="/static/", **settings):
        server = LiveServer("127.0.0.1")
        try:
            yield server.url
        finally:
            server.stop()


def spellings(secret: str) -> set[str]:
    return {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }


class TestWebhookURL:
    def test_prints_the_endpoint_with_the_token_and_nothing_else(self):
        out, err = run("morph_webhooks_url", "https://crm.example.com")

        assert out == f"https://crm.example.com/webhooks/morph/?token={SECRET}\n"
        assert err == ""

    @pytest.mark.django_db
    def test_the_printed_url_authenticates_a_request_by_itself(self):
        secret = "a b&c=d/+0123456789abcdefghij"  # survives the query string only if encoded
        with webhooks(SECRETS=[secret]):
            out, _ = run("morph_webhooks_url", "https://crm.example.com/")
        url = urlsplit(out.strip())
        assert url.path == "/webhooks/morph/" and secret not in url.query

        with webhooks(SECRETS=[secret]):
            response = Client().post(
                f"{url.path}?{url.query}",
                data=opportunity_event(),
                content_type="application/json",
                headers={"x-conector-id": "hubspot", "x-owner-id": "t", "x-idempotency-key": "k"},
            )
        assert response.json() == {"status": "processed"}

    def test_keeps_the_site_prefix_and_hands_out_the_newest_secret(self):
        with webhooks(SECRETS=["new-secret-0123456789abcdef", "old-secret-0123456789abcdef"]):
            out, _ = run("morph_webhooks_url", "https://example.com/crm/")

        assert out.strip() == "https://example.com/crm/webhooks/morph/?token=new-secret-0123456789abcdef"

    def test_warns_when_the_token_would_cross_the_network_in_clear(self):
        _, err = run("morph_webhooks_url", "http://crm.example.com")
        assert "http" in err and "Use https" in err

        for local in ("http://127.0.0.1:8000", "http://127.0.0.2", "http://[::1]:8000", "http://localhost"):
            out, err = run("morph_webhooks_url", local)
            assert (out.startswith(f"{local}/webhooks/morph/?token="), err) == (True, "")

    def test_a_prefix_is_not_doubled_by_force_script_name(self):
        # What Django does for FORCE_SCRIPT_NAME = "/crm" when a command starts.
        set_script_prefix("/crm/")
        try:
            out, _ = run("morph_webhooks_url", "https://example.com/crm")
        finally:
            set_script_prefix("/")

        assert out.strip() == f"https://example.com/crm/webhooks/morph/?token={SECRET}"

    def test_a_prefix_is_quoted(self):
        out, _ = run("morph_webhooks_url", "https://example.com/my app")

        assert out.strip() == f"https://example.com/my%20app/webhooks/morph/?token={SECRET}"

    def test_without_secrets(self):
        with webhooks(SECRETS=[], ALLOW_UNAUTHENTICATED=True):
            out, err = run("morph_webhooks_url", "https://crm.example.com")
        assert out.strip() == "https://crm.example.com/webhooks/morph/"
        assert "No token" in err

        with webhooks(SECRETS=[]):
            assert "['SECRETS'] is empty" in fails("morph_webhooks_url", "https://crm.example.com")
        with webhooks(SECRETS=[], SIGNING_SECRETS=[SIGNING_SECRET]):
            assert "Morph cannot sign requests" in fails("morph_webhooks_url", "https://crm.example.com")

    @pytest.mark.parametrize(
        ("site_url", "error"),
        [
            ("crm.example.com", "is not a site URL"),
            ("ftp://crm.example.com", "is not a site URL"),
            ("https://crm.example.com/?a=1", "has a query or fragment"),
            ("https://morph:secret@crm.example.com", "without a user name or password"),
            ("https://crm.example.com:http", "has an invalid port"),
            ("http://[::1:8000", "is not a site URL"),
        ],
    )
    def test_refuses_what_is_not_a_site_url(self, site_url, error):
        assert error in fails("morph_webhooks_url", site_url)

    @override_settings(ROOT_URLCONF="tests.urls_without_app")
    def test_says_when_the_app_is_not_routed(self):
        assert '*webhook_urls("webhooks/morph/")' in fails("morph_webhooks_url", "https://crm.example.com")


@pytest.mark.django_db(transaction=True)
class TestCheck:
    def test_a_working_configuration(self, sent_signals, monkeypatch):
        recorded = []
        # What the check removes once it passed: seen as it was before.
        monkeypatch.setattr(morph_webhooks_check, "forget", recorded.append)
        with serving() as site:
            out, err = run("morph_webhooks_check", site)

        [delivery] = recorded
        assert f"OK: delivery {delivery.pk} was authenticated, validated and processed (ignored)" in out
        assert "Answer: 200" in out and SECRET not in out + err
        assert (delivery.event, delivery.status, delivery.http_status) == (
            "telephonyCall::created",
            "ignored",
            200,
        )
        assert IdempotencyKey.objects.get().outcome == "ignored"
        # The check leaves the project's data and receivers alone.
        assert not Opportunity.objects.exists()
        assert sent_signals.calls == []

    def test_a_passed_check_leaves_nothing_behind(self):
        with serving() as site:
            out, _ = run("morph_webhooks_check", site)

        assert "then removed." in out
        assert not WebhookDelivery.objects.exists() and not IdempotencyKey.objects.exists()
        # Neither the admin's Connections, the metrics nor the health check's silence see it.
        assert not Connection.objects.exists()
        assert "(0 heard from)" in run("morph_webhooks_health")[0]

    def test_a_failed_check_keeps_its_delivery_to_look_at(self):
        with raising_receiver(event_received, RuntimeError, "receiver bug"), serving() as site:
            error = fails("morph_webhooks_check", site)

        assert "Processing raised an exception" in error
        assert WebhookDelivery.objects.get().status == "failed"

    def test_a_signing_gateway(self, monkeypatch):
        recorded = []
        monkeypatch.setattr(morph_webhooks_check, "forget", recorded.append)
        with webhooks(SECRETS=[], SIGNING_SECRETS=[SIGNING_SECRET]), serving() as site:
            out, _ = run("morph_webhooks_check", site)

        assert "OK: delivery" in out
        headers = recorded[0].headers
        assert "webhook-id" in headers and "webhook-signature" not in headers

    def test_connector_and_owner_allowlists(self):
        with webhooks(ALLOWED_CONNECTORS=["hubspot"], ALLOWED_OWNERS=["acme"]), serving() as site:
            assert "OK: delivery" in run("morph_webhooks_check", site)[0]
            error = fails("morph_webhooks_check", site, "--connector", "pipedrive")

        assert "Connector 'pipedrive' is not accepted here." in error and "--connector" in error
        # The passed check's delivery is removed; the refused one stays, to look at.
        assert list(WebhookDelivery.objects.values_list("connector_id", "owner_id", "status")) == [
            ("pipedrive", "acme", "rejected"),
        ]
        # A real tenant's connection is the project's: kept, and never heard from.
        assert list(Connection.objects.values_list("connector_id", "owner_id")) == [("hubspot", "acme")]

    def test_a_refused_network(self):
        with webhooks(ALLOWED_NETWORKS=["10.0.0.0/8"]), serving() as site:
            error = fails("morph_webhooks_check", site)

        assert "Requests from this address are not accepted." in error and "ALLOWED_NETWORKS" in error

    def test_nothing_listening(self):
        port = free_port()
        error = fails("morph_webhooks_check", f"http://127.0.0.1:{port}", "--timeout", "2")

        assert (
            error
            == f"Nothing listens at http://127.0.0.1:{port}/webhooks/morph/: is the server running, at this address?"
        )

    def test_no_answer_in_time(self):
        with socket.socket() as silent:  # accepts connections, never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            error = fails(
                "morph_webhooks_check", f"http://127.0.0.1:{silent.getsockname()[1]}", "--timeout", "0.3"
            )

        assert error == "No answer within 0.3 s."

    def test_a_site_url_it_cannot_use(self):
        assert "is not a site URL" in fails("morph_webhooks_check", "crm.example.com")

    def test_a_wrong_path(self):
        with serving() as site:
            error = fails("morph_webhooks_check", f"{site}/crm")

        assert error.startswith("Nothing is routed at this path")

    def test_a_redirect_is_reported_without_the_token(self):
        secret = "s3cr+t/\u00e9&x=y 0123456789abcdefgh"  # spelled differently in a URL and in JSON
        with webhooks(SECRETS=[secret]), serving(SECURE_SSL_REDIRECT=True) as site:
            out = StringIO()
            with pytest.raises(CommandError) as error:
                call_command("morph_webhooks_check", site, stdout=out)

        https = site.replace("http://", "https://")
        assert f"The server redirects (-> {https}/webhooks/morph/?...)" in str(error.value)
        shown = str(error.value) + out.getvalue()
        assert not [spelling for spelling in spellings(secret) if spelling.lower() in shown.lower()]

    def test_a_server_that_does_not_speak_http(self):
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]

            def answer_garbage() -> None:
                connection, _ = server.accept()
                with connection:
                    connection.recv(65536)
                    connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

            thread = threading.Thread(target=answer_garbage)
            thread.start()
            error = fails("morph_webhooks_check", f"http://127.0.0.1:{port}")
            thread.join()

        assert (
            error
            == f"What answers at http://127.0.0.1:{port}/webhooks/morph/ does not speak HTTP (BadStatusLine)."
        )
        assert SECRET not in error

    @pytest.mark.parametrize(
        ("option", "value", "error"),
        [
            ("--timeout", "0", "expected a positive number of seconds"),
            ("--wait", "-1", "expected a positive number of seconds"),
            ("--connector", "c" * 256, "expected 1 to 255 characters"),
            ("--owner", "", "expected 1 to 255 characters"),
        ],
    )
    def test_refuses_options_it_cannot_honour(self, option, value, error):
        assert error in fails("morph_webhooks_check", "http://127.0.0.1:8000", f"{option}={value}")

    def test_a_host_not_in_allowed_hosts(self):
        with serving(ALLOWED_HOSTS=["crm.example.com"]) as site:
            error = fails("morph_webhooks_check", site)

        assert "ALLOWED_HOSTS" in error

    def test_deferred_without_a_worker(self):
        tasks = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
        with webhooks(PROCESSING="deferred"), serving(TASKS=tasks) as site:
            error = fails("morph_webhooks_check", site, "--wait", "0.3")

        assert error.startswith("Still queued after 0.3 s: no worker is processing queue 'default'")
        assert WebhookDelivery.objects.get().status == "queued"

    def test_deferred_on_the_deliveries_queue_without_a_worker(self):
        with webhooks(PROCESSING="deferred", QUEUE="deliveries"), serving() as site:
            error = fails("morph_webhooks_check", site, "--wait", "0.3")

        assert error.startswith("Still queued after 0.3 s: no worker is applying the queued deliveries.")
        assert "manage.py morph_webhooks_worker" in error
        assert WebhookDelivery.objects.get().status == "queued"

    def test_deferred_with_a_worker(self):
        # The immediate backend runs the task as soon as the delivery commits, as a fast worker would.
        with webhooks(PROCESSING="deferred"), serving() as site:
            out, _ = run("morph_webhooks_check", site)

        assert '{"status":"queued"}' in out and "OK: delivery" in out
        assert not WebhookDelivery.objects.exists()
