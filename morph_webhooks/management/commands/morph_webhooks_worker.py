from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import conf
from ...worker import Worker
from ..options import positive_seconds


class Command(BaseCommand):
    help = (
        'Deferred mode with QUEUE = "deliveries": apply the queued deliveries as they fall due. Run '
        "as many as you like; SIGTERM or Ctrl+C finishes the delivery in hand and stops."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch", action="store_true", help="Stop once no delivery is due (cron, CI, a backlog)."
        )
        parser.add_argument(
            "--interval",
            type=positive_seconds,
            default=1.0,
            help="Seconds to wait before looking again when no delivery is due (default 1).",
        )

    def handle(self, *args: Any, batch: bool, interval: float, **options: Any) -> None:
        if not (conf.DEFERRED and conf.QUEUE == "deliveries"):
            raise CommandError(
                "morph_webhooks_worker applies deliveries queued with MORPH_WEBHOOKS['QUEUE'] = "
                f"'deliveries' in deferred mode; PROCESSING is {conf.PROCESSING!r} and QUEUE is "
                f"{conf.QUEUE!r}."
            )
        worker = Worker(interval=interval, until_empty=batch)

        def stop(signum: int, frame: FrameType | None) -> None:
            self.stderr.write(f"{signal.Signals(signum).name}: stopping after the delivery in hand.")
            worker.stop()
            # A second signal stops at once.
            signal.signal(signum, signal.SIG_DFL)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
        worker.run()
        applied = worker.handled - worker.failed
        failed = f"; {worker.failed} failed (recorded, and retried or dead)" if worker.failed else ""
        self.stdout.write(f"Applied {applied} {'delivery' if applied == 1 else 'deliveries'}{failed}.")
