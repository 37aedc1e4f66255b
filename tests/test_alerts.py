"""MAIL_ADMINS_ON_FAILURE: a dead delivery mails ADMINS, once per interval in a flood, never a
secret, and a mail that cannot be sent never breaks a worker."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from unittest import mock

import django
import pytest
from django.core.cache import caches
from django.urls import reverse

from morph_webhooks import alerts
from morph_webhooks.intake import run_delivery
from morph_webhooks.models import WebhookDelivery
from morph_webhooks.signals import opportunity_created
from morph_webhooks.testing import opportunity_event
from tests.helpers import SECRET, raising_receiver

pytestmark = pytest.mark.django_db

API_SECRET = "api-secret-never-shown-0123"
ADMIN = "ops@example.com"
# What a receiver's exception may say: several lines, the URL with its token, the secrets.
ERROR = f"CRM is down\nwhile calling https://crm.example/?token={SECRET} with {API_SECRET}"


@pytest.fixture(autouse=True)
def deferred(settings: Any) -> Iterator[None]:
    settings.MORPH_WEBHOOKS = {
        **settings.MORPH_WEBHOOKS,
        "PROCESSING": "deferred",
        "MAX_ATTEMPTS": 1,
        "MAIL_ADMINS_ON_FAILURE": True,
        "API_KEY": "api-key",
        "API_SECRET": API_SECRET,
    }
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    # Django 6 takes addresses; 5.2 (name, address) pairs.
    settings.ADMINS = [ADMIN] if django.VERSION >= (6,) else [("Ops", ADMIN)]
    caches["default"].clear()  # the throttle's state
    yield
    caches["default"].clear()


@pytest.fixture
def die(send: Any, django_capture_on_commit_callbacks: Any) -> Any:
    """Make deliveries that a worker gives up on, as when a receiver's service is down."""

    def die(count: int = 1, error: str = ERROR, first: int = 0) -> list[WebhookDelivery]:
        dead = []
        with raising_receiver(opportunity_created, RuntimeError, error):
            for index in range(first, first + count):
                dead.append(kill(send, django_capture_on_commit_callbacks, f"key-{index}"))
        return dead

    return die


def kill(send: Any, capture: Any, key: str) -> WebhookDelivery:
    send(opportunity_event("created", f"opp_{key}"), key=key)
    delivery = WebhookDelivery.objects.get(idempotency_key=key)
    # The worker's transaction commits: the mail, sent on commit, goes out.
    with capture(execute=True), pytest.raises(RuntimeError):
        run_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "dead"
    return delivery


def test_off_by_default(die, settings, mailoutbox):
    settings.MORPH_WEBHOOKS = {
        key: value for key, value in settings.MORPH_WEBHOOKS.items() if key != "MAIL_ADMINS_ON_FAILURE"
    }

    die()

    assert mailoutbox == []


def test_a_dead_delivery_mails_admins(die, mailoutbox):
    [delivery] = die()

    [mail] = mailoutbox
    assert mail.to == [ADMIN]
    # The model, the connection and the error, on one line.
    assert mail.subject.startswith(
        "[Django] Dead Morph webhook delivery: crmOpportunity from hubspot/tenant_1: "
        "RuntimeError: CRM is down while calling https://crm.example/?token=[redacted]"
    )
    assert "\n" not in mail.subject and len(mail.subject) < 200
    body = mail.body
    assert f"Admin: {reverse('admin:morph_webhooks_webhookdelivery_change', args=[delivery.pk])}" in body
    assert "Idempotency key: key-0" in body
    assert "Event: crmOpportunity::created" in body and "Morph id: opp_key-0" in body
    assert "Status: dead\n" in body
    assert f"morph_webhooks_reprocess {delivery.pk}" in body
    assert "Traceback" in body and "RuntimeError: CRM is down" in body
    for secret in (SECRET, API_SECRET):
        assert secret not in mail.subject and secret not in body
    assert "token=[redacted]" in body


def test_a_flood_mails_once_per_interval_and_counts_the_rest(die, mailoutbox):
    die(5)

    assert len(mailoutbox) == 1
    assert "Idempotency key: key-0" in mailoutbox[0].body
    assert caches["default"].get(alerts.NOT_MAILED_KEY) == 4

    # The interval has passed: the next death mails, and says how many were not mailed.
    caches["default"].delete(alerts.SENT_KEY)
    die(1, "still down", first=5)

    assert len(mailoutbox) == 2
    body = mailoutbox[1].body
    assert "Idempotency key: key-5" in body
    dead_list = reverse("admin:morph_webhooks_webhookdelivery_changelist") + "?status=dead"
    assert "4 more deliveries died since the last mail without a mail of their own" in body
    assert dead_list in body
    # None counted since this mail (the count was taken off, leaving 0).
    assert not caches["default"].get(alerts.NOT_MAILED_KEY)


def test_the_throttle_waits_the_interval(die, mailoutbox):
    cache = caches["default"]
    with mock.patch.object(cache, "add", wraps=cache.add) as add:
        die()

    add.assert_any_call(alerts.SENT_KEY, True, timeout=alerts.MAIL_INTERVAL)


def test_a_mail_server_down_does_not_break_the_worker(die, mailoutbox, caplog):
    with mock.patch("morph_webhooks.alerts.mail_admins", side_effect=ConnectionRefusedError("smtp down")):
        [delivery] = die()  # the receiver's RuntimeError, nothing else, reaches the worker

    assert delivery.status == "dead"
    [record] = [r for r in caplog.records if r.name == "morph_webhooks.alerts"]
    assert record.levelno == logging.ERROR
    assert f"Could not mail ADMINS about dead delivery {delivery.pk}" in record.getMessage()
    assert record.exc_info[0] is ConnectionRefusedError


def test_without_a_working_cache_every_death_mails(die, mailoutbox, caplog):
    cache = caches["default"]
    with mock.patch.object(cache, "add", side_effect=ConnectionError("cache down")):
        die(2)

    assert len(mailoutbox) == 2
    assert "Could not throttle the mails about dead deliveries" in caplog.text


def test_no_admins_no_mail(die, settings, mailoutbox):
    settings.ADMINS = []

    die()

    assert mailoutbox == []
