from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...conf import conf
from ...sweeper import sweep
from ..options import seconds_or_zero


class Command(BaseCommand):
    help = (
        "Deferred mode: enqueue again the queued deliveries overdue by more than PENDING_TIMEOUT "
        "(lost tasks, crashed workers); with QUEUE = 'deliveries', only count them. Safe to run "
        "from cron, and concurrently."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=seconds_or_zero,
            help="Seconds overdue; 0 for every queued delivery that is due "
            "(default: the setting PENDING_TIMEOUT).",
        )

    def handle(self, *args: Any, older_than: float | None, **options: Any) -> None:
        count = sweep(older_than)
        if conf.QUEUE == "deliveries":
            # Nothing to enqueue: a worker takes every due delivery, if one runs.
            self.stdout.write(
                f"{count} queued deliveries overdue; none enqueued (QUEUE is 'deliveries'): "
                "is morph_webhooks_worker running?"
            )
        else:
            self.stdout.write(f"Enqueued {count} overdue deliveries again.")
