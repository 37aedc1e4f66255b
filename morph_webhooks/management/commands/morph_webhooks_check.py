from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import quote, quote_plus

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import router, transaction
from django.utils import timezone

from ...auth import signature_headers
from ...conf import conf
from ...endpoint import EndpointError, endpoint_url, webhook_url
from ...models import ID_LENGTH, Connection, IdempotencyKey, Outcome, WebhookDelivery
from ...resources.fields import format_timestamp
from ..options import positive_seconds

# A well-formed event for a model the app does not store: it goes through authentication,
# validation, the idempotency key and processing (or a worker), yet changes no opportunity and
# sends no signal that a project's receivers would act on.
CHECK_EVENT = "telephonyCall::created"
CHECK_ID = "morph-webhooks-check"

# What an answer from the app itself means, by its "error" code and what the command sent.
APP_PROBLEMS = {
    ("not_authenticated", "token"): (
        "The request reached the app without its token: something in front of Django (a proxy, a "
        "rewrite rule) drops the query string or the Authorization header."
    ),
    ("not_authenticated", "signature"): (
        "The running server wants a shared secret: its MORPH_WEBHOOKS['SECRETS'] differ from the "
        "settings this command runs with, which have only SIGNING_SECRETS."
    ),
    ("not_authenticated", "nothing"): (
        "The running server wants a secret, and the settings this command runs with have none."
    ),
    ("authentication_failed", "token"): (
        "The running server does not accept this project's secret: its MORPH_WEBHOOKS['SECRETS'] (or "
        "SIGNING_SECRETS) differ from those of the settings this command runs with."
    ),
    ("authentication_failed", "signature"): (
        "The running server does not accept this project's signature: its "
        "MORPH_WEBHOOKS['SIGNING_SECRETS'] differ from those of the settings this command runs with, or "
        "the two clocks differ by more than SIGNATURE_TOLERANCE."
    ),
}
ANY_CREDENTIALS = {
    "unavailable": (
        "The app could not use its database (down, or a lock held too long). The server's log says which."
    ),
    "processing_failed": (
        "Processing raised an exception, often in a signal receiver: the delivery's error in the "
        "admin has the traceback."
    ),
}

# What an answer that did not come from the app means, by HTTP status.
SERVER_PROBLEMS = {
    400: "The server refused the request before the app saw it; most often its ALLOWED_HOSTS lacks this host.",
    401: "Something in front of the app (a proxy with its own authentication) refused the request.",
    403: "Something in front of the app refused the request (a proxy, firewall or middleware rule).",
    404: (
        "Nothing is routed at this path: include morph_webhooks.urls in the server's URLconf, and give "
        "the URL the project is served at, with any prefix."
    ),
    405: "Another view answers at this path and does not accept POST.",
    413: "A proxy in front of Django limits the body size below what Morph sends.",
    500: "The server failed before the app could answer: see the server's log.",
    502: "A proxy could not reach the Django server behind it.",
    504: "A proxy could not reach the Django server behind it.",
}


class Command(BaseCommand):
    help = (
        "Check the configuration end to end: post a test event to the running endpoint on SITE_URL "
        f"the way Morph does, and report what happened. The event ({CHECK_EVENT}) changes no "
        "opportunity, and once it passed the check removes what it recorded; a failed one stays in "
        "the request log to look at. Exits with status 1 when something is wrong."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "site_url", help="Where the running project is served, e.g. https://crm.example.com"
        )
        parser.add_argument(
            "--connector",
            type=header_value,
            help=f"x-conector-id to send (default: the first ALLOWED_CONNECTORS, else {CHECK_ID}).",
        )
        parser.add_argument(
            "--owner",
            type=header_value,
            help=f"x-owner-id to send (default: the first ALLOWED_OWNERS, else {CHECK_ID}).",
        )
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            default=10,
            help="Seconds to wait for an answer (default: %(default)s).",
        )
        parser.add_argument(
            "--wait",
            type=positive_seconds,
            default=30,
            help="Deferred mode: seconds to wait for a worker to process it (default: %(default)s).",
        )

    def handle(self, *args: Any, site_url: str, **options: Any) -> None:
        key = f"{CHECK_ID}-{uuid.uuid4().hex}"
        connector = options["connector"] or next(iter(conf.ALLOWED_CONNECTORS), CHECK_ID)
        owner = options["owner"] or next(iter(conf.ALLOWED_OWNERS), CHECK_ID)
        body = json.dumps(check_event(key)).encode()
        headers = {
            "Content-Type": "application/json",
            "x-conector-id": connector,
            "x-owner-id": owner,
            "x-idempotency-key": key,
        }
        sent = "token" if any(conf.SECRETS) else "nothing"
        signing_secret = next(filter(None, conf.SIGNING_SECRETS), None)
        try:
            if sent == "nothing" and signing_secret:
                url = endpoint_url(site_url)  # a signing gateway: sign as it would
                headers |= signature_headers(signing_secret, key, body)
                sent = "signature"
            else:
                url = webhook_url(site_url)  # the secret in the URL, exactly as Morph sends it
        except EndpointError as exc:
            raise CommandError(str(exc)) from exc

        self.stdout.write(f"POST {masked(url)}\n  {CHECK_EVENT}, x-idempotency-key {key}")
        status, answer, took = post(url, body, headers, options["timeout"])
        self.stdout.write(f"Answer: {status} {shorten(answer)} ({took * 1000:.0f} ms)")
        data = json_object(answer)
        if status != 200:
            raise CommandError(diagnose(status, data, answer, sent))
        if data is None or data.get("status") not in (Outcome.IGNORED, Outcome.QUEUED):
            raise CommandError("The answer is not the app's: is another application served at this URL?")

        delivery = WebhookDelivery.objects.filter(
            idempotency_key=key, connector_id=connector, owner_id=owner
        ).first()
        if delivery is None:
            raise CommandError(
                "The endpoint answered, but this database has no record of the request: the running "
                "server uses another database than the settings this command runs with."
            )
        if delivery.status == Outcome.QUEUED:
            self.stdout.write(f"Queued; waiting up to {options['wait']:g} s for a worker...")
            delivery = wait_for_worker(delivery, options["wait"])
        if delivery.status == Outcome.QUEUED:
            raise CommandError(worker_problem(delivery, options["wait"]))
        if delivery.status != Outcome.IGNORED:
            raise CommandError(f"Delivery {delivery.pk} ended {delivery.status}: {last_line(delivery.error)}")
        passed = (
            f"OK: delivery {delivery.pk} was authenticated, validated and processed ({delivery.status}), "
            "then removed."
        )
        forget(delivery)
        self.stdout.write(self.style.SUCCESS(passed))


def forget(delivery: WebhookDelivery) -> None:
    """Delete what the passed check left: its delivery, its idempotency key, and the connection
    its event registered when that is the check's own (named CHECK_ID). Left behind, they would
    show in the admin and the metrics, and a day later the health check would report the
    connection silent."""
    connection = {"connector_id": delivery.connector_id, "owner_id": delivery.owner_id}
    with transaction.atomic(using=router.db_for_write(WebhookDelivery)):
        IdempotencyKey.objects.filter(key=delivery.idempotency_key, **connection).delete()
        delivery.delete()
        own = CHECK_ID in connection.values()
        # A failed check's delivery, kept to look at, keeps the connection too.
        if own and not WebhookDelivery.objects.filter(**connection).exists():
            Connection.objects.filter(**connection).delete()


def header_value(text: str) -> str:
    # Longer values are stored truncated, and the delivery could not be found again.
    if not text or len(text) > ID_LENGTH:
        raise argparse.ArgumentTypeError(f"expected 1 to {ID_LENGTH} characters")
    return text


def check_event(key: str) -> dict[str, Any]:
    now = format_timestamp(timezone.now())
    return {
        "event": CHECK_EVENT,
        "data": {
            "object": "resource",
            "model": CHECK_EVENT.partition("::")[0],
            "id": key,
            "fields": {},
            "createdAt": now,
            "updatedAt": now,
        },
    }


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    # Morph posts to the URL it is given; a redirect is an answer to report, not to follow.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str, float]:
    """POST and return the status, the answer's text (secrets masked) and the time taken."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    # Directly, as Morph does: neither through this machine's proxy nor after a redirect.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _KeepRedirects())
    started = time.monotonic()
    try:
        try:
            with opener.open(request, timeout=timeout) as response:
                status, text = response.status, response.read(2000).decode(errors="replace")
        except urllib.error.HTTPError as exc:
            with exc:  # an error answer is a response too, with a connection to close
                location = exc.headers.get("Location")
                # A redirect's target repeats the token, in whatever encoding: never show its query.
                shown = location.split("?")[0] + ("?..." if "?" in location else "") if location else ""
                status, text = (
                    exc.code,
                    (f"-> {shown}" if location else exc.read(2000).decode(errors="replace")),
                )
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise CommandError(masked(unreachable(url, getattr(exc, "reason", exc), timeout))) from exc
    return status, masked(text), time.monotonic() - started


def masked(text: str) -> str:
    """``text`` without the configured secrets, in any spelling an answer might echo them."""
    for secret in filter(None, conf.SECRETS):
        spellings = {
            secret,
            quote(secret, safe=""),
            quote_plus(secret),
            json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1],
        }
        for spelling in sorted(spellings, key=len, reverse=True):
            # Percent-encoding may come back in either case.
            text = re.sub(re.escape(spelling), "<secret>", text, flags=re.IGNORECASE)
    return text


def shorten(answer: str) -> str:
    # Error pages are long HTML documents: their title says enough.
    title = re.search(r"<title>(.*?)</title>", answer, re.IGNORECASE | re.DOTALL)
    text = f"(HTML) {title.group(1)}" if title else answer
    return " ".join(text.split())[:300]


def unreachable(url: str, reason: Any, timeout: float) -> str:
    endpoint = url.split("?")[0]
    if isinstance(reason, ConnectionRefusedError):
        return f"Nothing listens at {endpoint}: is the server running, at this address?"
    if isinstance(reason, socket.gaierror):
        return f"The host of {endpoint} does not resolve: {reason}."
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"No answer within {timeout:g} s."
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed: {reason}."
    if isinstance(reason, http.client.HTTPException):
        return f"What answers at {endpoint} does not speak HTTP ({type(reason).__name__})."
    return f"Could not post to {endpoint}: {reason}."


def json_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def diagnose(status: int, data: dict[str, Any] | None, answer: str, sent: str) -> str:
    if 300 <= status < 400:
        return (
            f"The server redirects ({answer}): give Morph the URL it redirects to (https? a trailing slash?)."
        )
    if data is None or "error" not in data:
        return SERVER_PROBLEMS.get(status, f"Unexpected answer {status}.")
    error = str(data["error"])
    if error == "permission_denied":
        return (
            f"The app refused this sender: {data.get('detail')} (ALLOWED_NETWORKS / FORWARDED_PROXIES, "
            "or ALLOWED_CONNECTORS / ALLOWED_OWNERS: pass --connector / --owner). Morph's requests "
            "come from Morph's addresses, not this machine's."
        )
    problem = APP_PROBLEMS.get((error, sent)) or ANY_CREDENTIALS.get(error)
    return problem or f"The app refused the test event: {shorten(answer)}"


def wait_for_worker(delivery: WebhookDelivery, seconds: float) -> WebhookDelivery:
    deadline = time.monotonic() + seconds
    while delivery.status == Outcome.QUEUED and not delivery.error and time.monotonic() < deadline:
        time.sleep(0.2)
        delivery.refresh_from_db()
    return delivery


def worker_problem(delivery: WebhookDelivery, waited: float) -> str:
    if delivery.error:
        return (
            f"A worker ran delivery {delivery.pk} and failed; it retries at {delivery.next_attempt_at}: "
            f"{last_line(delivery.error)}"
        )
    if conf.QUEUE == "deliveries":
        return (
            f"Still queued after {waited:g} s: no worker is applying the queued deliveries. Start one "
            "(manage.py morph_webhooks_worker) and check its log."
        )
    return (
        f"Still queued after {waited:g} s: no worker is processing queue {conf.TASK_QUEUE!r} of task "
        f"backend {conf.TASK_BACKEND!r}. Start one (with the database backend: manage.py db_worker) "
        "and check its log."
    )


def last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1]
