from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, make_aware

from ...models import Outcome, WebhookDelivery
from ...reprocess import reprocess_many
from ..options import positive_int


def timestamp(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValueError(value)
    return make_aware(parsed) if is_naive(parsed) else parsed


class Command(BaseCommand):
    help = (
        "Run logged deliveries through validation and processing again, in arrival order: the same "
        "code path as a new request. A delivery that was processed, stale, ignored or a duplicate keeps "
        "its outcome and is reported as already applied."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=positive_int, help="Delivery ids.")
        parser.add_argument(
            "--status",
            action="append",
            choices=Outcome.values,
            help="Only deliveries with this status (repeatable).",
        )
        parser.add_argument("--since", type=timestamp, help="Received at or after (ISO 8601).")
        parser.add_argument("--until", type=timestamp, help="Received before (ISO 8601).")
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be reprocessed; change nothing."
        )
        parser.add_argument(
            "--progress-every",
            type=positive_int,
            default=100,
            help="Print progress every N deliveries (default: %(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        deliveries = WebhookDelivery.objects.order_by("received_at", "pk")
        if options["ids"]:
            deliveries = deliveries.filter(pk__in=options["ids"])
        if options["status"]:
            deliveries = deliveries.filter(status__in=options["status"])
        if options["since"]:
            deliveries = deliveries.filter(received_at__gte=options["since"])
        if options["until"]:
            deliveries = deliveries.filter(received_at__lt=options["until"])
        if not (options["ids"] or options["status"] or options["since"] or options["until"]):
            raise CommandError("Name the deliveries: ids, --status, --since or --until.")

        total = deliveries.count()
        if options["dry_run"]:
            for delivery in deliveries.only(
                "pk", "received_at", "status", "event", "idempotency_key"
            ).iterator():
                self.stdout.write(
                    f"{delivery.pk} {delivery.received_at.isoformat()} {delivery.status} {delivery.event} {delivery.idempotency_key}"
                )
            self.stdout.write(f"Would reprocess {total} deliveries.")
            return

        def report_failure(delivery: WebhookDelivery, exc: Exception) -> None:
            # Recorded on the delivery; the others still run.
            self.stderr.write(f"{delivery.pk}: {type(exc).__name__}: {exc}")

        def report_progress(done: int, outcomes: Counter[str]) -> None:
            if done % options["progress_every"] == 0 or done == total:
                self.stdout.write(
                    f"{done}/{total} "
                    + ", ".join(f"{count} {name}" for name, count in sorted(outcomes.items()))
                )

        outcomes = reprocess_many(deliveries.iterator(chunk_size=500), report_failure, report_progress)
        self.stdout.write(f"Reprocessed {sum(outcomes.values())} deliveries.")
