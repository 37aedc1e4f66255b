from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils import timezone

from ...checks import MIN_KEY_DAYS
from ...conf import conf
from ...models import AWAITING_APPLY, IdempotencyKey, Outcome, SignedMessage, WebhookDelivery
from ..options import positive_int, seconds_or_zero


class Command(BaseCommand):
    help = (
        "Delete idempotency keys and logged deliveries older than their retention, and signed messages "
        "outside SIGNATURE_TOLERANCE, in small batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--keys-days",
            type=positive_int,
            help="Keep keys this many days (default: the setting KEY_RETENTION_DAYS).",
        )
        parser.add_argument(
            "--deliveries-days",
            type=positive_int,
            help="Keep deliveries this many days (default: the setting DELIVERY_RETENTION_DAYS).",
        )
        parser.add_argument(
            "--batch-size", type=positive_int, default=1000, help="Rows per DELETE (default: %(default)s)."
        )
        parser.add_argument(
            "--pause",
            type=seconds_or_zero,
            default=0.0,
            help="Seconds to wait between batches, leaving the database to the endpoint (default: none).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        key_days = options["keys_days"] if options["keys_days"] is not None else conf.KEY_RETENTION_DAYS
        delivery_days = (
            options["deliveries_days"]
            if options["deliveries_days"] is not None
            else conf.DELIVERY_RETENTION_DAYS
        )
        if key_days < MIN_KEY_DAYS:
            raise CommandError(f"Keys must be kept at least {MIN_KEY_DAYS} days, as long as Morph may retry.")
        now = timezone.now()
        # What is still waiting for a worker is never pruned, however old.
        keys = IdempotencyKey.objects.filter(first_seen_at__lt=now - timedelta(days=key_days)).exclude(
            outcome=Outcome.QUEUED
        )
        deliveries = WebhookDelivery.objects.filter(
            received_at__lt=now - timedelta(days=delivery_days)
        ).exclude(status__in=AWAITING_APPLY)
        # A signature this old fails the timestamp check anyway: its record guards nothing.
        signed = SignedMessage.objects.filter(signed_at__lt=now - timedelta(seconds=conf.SIGNATURE_TOLERANCE))
        for label, queryset, column in (
            ("idempotency keys", keys, "first_seen_at"),
            ("deliveries", deliveries, "received_at"),
            ("signed messages", signed, "signed_at"),
        ):
            if options["dry_run"]:
                self.stdout.write(f"Would delete {queryset.count()} {label}.")
            else:
                deleted = delete_in_batches(queryset, column, options["batch_size"], options["pause"])
                self.stdout.write(f"Deleted {deleted} {label}.")


def delete_in_batches(queryset: QuerySet[Any], column: str, batch_size: int, pause: float = 0.0) -> int:
    """Delete ``queryset`` in short transactions of ``batch_size`` rows, oldest ``column`` first,
    pausing ``pause`` seconds between them; return how many rows went.

    Each batch is read from the index on ``column``, the one the queryset filters on, starting
    where the last one ended: reading from the oldest each time would walk again over the index
    entries of every row already deleted (they stay until a vacuum), a quadratic cost on a big
    table. A DELETE holds its rows' locks only until its batch commits, so no lock is held for
    long, and the pause leaves the endpoint the disk between batches."""
    deleted = 0
    after: tuple[Any, int] | None = None
    while True:
        remaining = queryset
        if after is not None:
            # Past the previous batch, by (column, pk): rows of the same instant are not skipped.
            position, pk = after
            remaining = queryset.filter(**{f"{column}__gte": position}).exclude(
                **{column: position, "pk__lte": pk}
            )
        batch = list(remaining.order_by(column, "pk").values_list(column, "pk")[:batch_size])
        if not batch:
            return deleted
        # The DELETE repeats the queryset's conditions: a row that changed since it was read (an
        # old rejected delivery reprocessed into the queue meanwhile) is no longer old or settled
        # enough to go, and deleting it would leave its key waiting for it forever.
        deleted += queryset.filter(pk__in=[pk for _position, pk in batch]).delete()[0]
        after = batch[-1]
        if pause and len(batch) == batch_size:
            time.sleep(pause)
