"""Mailing the project's ADMINS when a delivery dies (``MAIL_ADMINS_ON_FAILURE``).

A dead delivery is an event no worker will try again, and Morph will not resend it: someone must
fix the cause and reprocess it. The receiver is connected when the app is ready and does nothing
unless the setting is on.

A flood (a receiver's dependency down while hundreds of deliveries exhaust their attempts) must
not become hundreds of mails, nor hold every worker on a mail server: the first death mails at
once, the next ones within ``MAIL_INTERVAL`` only count, and the next mail after that says how many
were not mailed. The throttle lives in the default cache, so it is shared by every process when the
cache is (Redis, Memcached, the database); with Django's default per-process memory cache each
worker process mails at most once per interval.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from django.core.cache import caches
from django.core.mail import mail_admins
from django.db import transaction
from django.urls import NoReverseMatch, reverse
from django.utils.text import Truncator

from .conf import conf
from .models import Outcome, WebhookDelivery
from .redaction import redact

logger = logging.getLogger(__name__)

MAIL_INTERVAL = 600  # seconds between two mails, at most
SENT_KEY = "morph_webhooks:failure_mail_sent"
NOT_MAILED_KEY = "morph_webhooks:failure_mail_not_mailed"
SUBJECT_ERROR = 100  # characters of the error in the subject; the body has all of it


def mail_admins_on_failure(
    sender: Any, delivery: WebhookDelivery, exception: BaseException, **kwargs: Any
) -> None:
    """The ``delivery_failed`` receiver. Never raises: a mail server down must not turn a recorded
    death into a failed task, which the task backend might retry."""
    try:
        if not conf.MAIL_ADMINS_ON_FAILURE:
            return
        # A death that rolls back did not happen; outside a transaction this runs at once.
        transaction.on_commit(lambda: _mail(delivery, exception))
    except Exception:
        logger.exception("Could not mail ADMINS about dead delivery %s", delivery.pk)


def _mail(delivery: WebhookDelivery, exception: BaseException) -> None:
    try:
        not_mailed = _not_mailed_since_last_mail()
    except Exception:
        # An alert matters more than a quiet inbox: without a working cache, every death mails.
        logger.exception("Could not throttle the mails about dead deliveries")
        not_mailed = 0
    if not_mailed is None:
        return
    try:
        subject, message = failure_mail(delivery, exception, not_mailed)
        mail_admins(subject, message)
    except Exception:
        logger.exception("Could not mail ADMINS about dead delivery %s", delivery.pk)


def _not_mailed_since_last_mail() -> int | None:
    """None when a mail went out less than MAIL_INTERVAL ago (this death is counted instead), else
    how many deaths were counted since the last mail."""
    cache = caches["default"]
    # add() is atomic in every shared cache: of concurrent deaths, one mails.
    if not cache.add(SENT_KEY, True, timeout=MAIL_INTERVAL):
        try:
            cache.incr(NOT_MAILED_KEY)
        except ValueError:  # the first one not mailed
            if not cache.add(NOT_MAILED_KEY, 1, timeout=None):
                cache.incr(NOT_MAILED_KEY)
        return None
    not_mailed = cache.get(NOT_MAILED_KEY, 0)
    if not_mailed:
        # Taken off, not deleted: a death counted meanwhile stays counted for the next mail.
        with contextlib.suppress(ValueError):  # gone meanwhile (evicted)
            cache.decr(NOT_MAILED_KEY, not_mailed)
    return int(not_mailed)


def failure_mail(delivery: WebhookDelivery, exception: BaseException, not_mailed: int = 0) -> tuple[str, str]:
    """The subject and body: what died, where to find it, why; no header, body or secret."""
    model = delivery.event.partition("::")[0] or "request"
    # Masked before it is cut short: a secret cut in two would no longer be found.
    error = hidden(one_line(f"{type(exception).__name__}: {exception}"))
    subject = one_line(
        f"Dead Morph webhook delivery: {model} from {delivery.connector_id}/{delivery.owner_id}: "
        f"{Truncator(error).chars(SUBJECT_ERROR)}"
    )
    lines = [
        f"Delivery {delivery.pk} died after {delivery.attempts} "
        f"{'attempt' if delivery.attempts == 1 else 'attempts'}: no worker will try it again.",
        "Fix the cause, then reprocess it (admin action, or "
        f"manage.py morph_webhooks_reprocess {delivery.pk}).",
        "",
        f"Admin: {admin_path(delivery)}",
        f"Event: {delivery.event or '-'}",
        f"Morph id: {delivery.remote_id or '-'}",
        f"Connection: {delivery.connector_id} / {delivery.owner_id}",
        f"Idempotency key: {delivery.idempotency_key or '-'}",
        f"Status: {delivery.status}",
        f"Received: {delivery.received_at:%Y-%m-%d %H:%M:%S %Z}",
    ]
    if not_mailed:
        lines += [
            "",
            f"{not_mailed} more {'delivery' if not_mailed == 1 else 'deliveries'} died since the last "
            f"mail without a mail of their own (at most one every {MAIL_INTERVAL // 60} minutes): "
            f"see {admin_path(None)}",
        ]
    lines += ["", "Error:", delivery.error or error]
    return hidden(subject), hidden("\n".join(lines))


def admin_path(delivery: WebhookDelivery | None) -> str:
    """The delivery's page in the admin (or the dead deliveries' list), as a path: the app does
    not know the site's address."""
    try:
        if delivery is None:
            return reverse("admin:morph_webhooks_webhookdelivery_changelist") + f"?status={Outcome.DEAD}"
        return reverse("admin:morph_webhooks_webhookdelivery_change", args=[delivery.pk])
    except NoReverseMatch:  # a project without the admin
        return "-"


def one_line(text: str) -> str:
    # A subject is one header line; an exception's message may hold anything.
    return re.sub(r"\s+", " ", text).strip()


def hidden(text: str) -> str:
    """``text`` without any of the secrets: the shared and signing ones, the API's, a ``token=``."""
    return redact(text)
