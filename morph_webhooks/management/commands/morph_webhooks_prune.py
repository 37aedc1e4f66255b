from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils import timezone

from ...checks import MIN_KEY_DAYS
from ...conf import conf
from ...models import AWAITING_APPLY, IdempotencyKey, Outcome, SignedMessage, WebhookDelivery
from ..options import positive_int


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
        for label, queryset in (
            ("idempotency keys", keys),
            ("deliveries", deliveries),
            ("signed messages", signed),
        ):
            if options["dry_run"]:
                self.stdout.write(f"Would delete {queryset.count()} {label}.")
            else:
                self.stdout.write(f"Deleted {delete_in_batches(queryset, options['batch_size'])} {label}.")


def delete_in_batches(queryset: QuerySet[Any], batch_size: int) -> int:
    """Short transactions, each over a slice of primary keys, so no lock is held for long."""
    deleted = 0
    while True:
        batch = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not batch:
            return deleted
        # The DELETE repeats the queryset's conditions: a row that changed since it was read (an
        # old rejected delivery reprocessed into the queue meanwhile) is no longer old or settled
        # enough to go, and deleting it would leave its key waiting for it forever.
        deleted += queryset.filter(pk__in=batch).delete()[0]
