"""Scrub the credentials that deliveries recorded before the request log masked them.

Deliveries logged by earlier versions may hold, in their stored headers, the URL's ``?token=``
secret (a proxy's X-Original-URL or X-Forwarded-Uri, a Referer) and the ``webhook-signature``
header, which could be replayed. This migration masks every ``token=`` value in each delivery's
headers and path and removes the headers never to be stored (``authorization``,
``proxy-authorization``, ``cookie``, ``webhook-signature``), whatever their values.

It reads no setting, so that it runs the same with no secret configured, or another one than
the deliveries were sent with: a secret written elsewhere than after ``token=`` (which the app
masks today by its configured value) is not found. Rotate a secret that may have been exposed.

The rules are copied from ``morph_webhooks.redaction`` as it was when this was written: a
migration must do the same whenever it runs. The deliveries are read and rewritten in batches of
BATCH_SIZE, each committed on its own, so that a large request log is never locked or held in
memory at once; a run cut short scrubs the rest when run again. Reversing it restores nothing.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import migrations, transaction

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "webhook-signature"})
TOKEN_IN_TEXT = re.compile(r"\b(token=)[^&#\s\"'<>]+", re.IGNORECASE)
BATCH_SIZE = 1000


def scrub_text(text: str) -> str:
    return TOKEN_IN_TEXT.sub(lambda match: match[1] + REDACTED, text)


def scrub_headers(headers: Any) -> Any:
    if not isinstance(headers, dict):
        return headers
    return {
        name: scrub_text(value) if isinstance(value, str) else value
        for name, value in headers.items()
        if str(name).lower() not in SECRET_HEADERS
    }


def scrub_deliveries(apps: Any, schema_editor: Any) -> None:
    alias = schema_editor.connection.alias
    deliveries = apps.get_model("morph_webhooks", "WebhookDelivery").objects.using(alias)
    last_pk = 0
    while True:
        with transaction.atomic(using=alias):
            after = deliveries.filter(pk__gt=last_pk).order_by("pk")
            batch = list(after.only("pk", "path", "headers")[:BATCH_SIZE])
            if not batch:
                return
            changed = []
            for delivery in batch:
                path, headers = scrub_text(delivery.path), scrub_headers(delivery.headers)
                if path != delivery.path or headers != delivery.headers:
                    delivery.path, delivery.headers = path, headers
                    changed.append(delivery)
            deliveries.bulk_update(changed, ["path", "headers"])
        last_pk = batch[-1].pk


class Migration(migrations.Migration):
    # Each batch commits on its own: see the module's docstring.
    atomic = False

    dependencies = [
        ("morph_webhooks", "0010_connector_and_owner_labels"),
    ]

    operations = [
        migrations.RunPython(scrub_deliveries, migrations.RunPython.noop, elidable=True),
    ]
