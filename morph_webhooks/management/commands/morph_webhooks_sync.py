from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import conf
from ...extras import MissingDependency
from ...models import ID_LENGTH, Connection
from ...resources.registry import REGISTRY
from ...sync_queue import enqueue_sync, sync_backend_problem
from ..progress import Progress

try:
    from ...sync import OUTCOMES, ModelSync, SyncReport, SyncRunning, models_to_sync, sync_connection
except MissingDependency as exc:  # httpx: said by handle(), as a command's error, not a traceback
    missing: MissingDependency | None = exc
else:
    missing = None


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, Kubernetes, ``timeout``): a sync stops as on Ctrl-C, its page in hand
    rolled back, its run recorded and its connection's lease given back, so that the next run
    need not wait SYNC_LEASE_SECONDS."""


@contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # a signal handler can only be set, and run, in the main thread
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Command(BaseCommand):
    help = (
        "Bring the local copy up to date from Morph's REST API: read every resource of each model "
        "for a connection (or --all known connections) and store each as a webhook's would be. "
        "Exits with status 1 unless every page of every model was read and applied. SIGTERM stops "
        "it as Ctrl-C does."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--connector", help="The connection's connector id (with --owner).")
        which.add_argument("--all", action="store_true", help="Every known connection.")
        parser.add_argument("--owner", help="The connection's owner id (with --connector).")
        parser.add_argument(
            "--model",
            action="append",
            choices=list(REGISTRY),
            metavar="MODEL",
            help=f"A Morph model to sync; repeat for more (default: all of {', '.join(REGISTRY)}).",
        )
        parser.add_argument(
            "--delete-missing",
            action="store_true",
            help=(
                "After a complete scan of a model, soft-delete the local rows Morph no longer returned "
                "(not those written here since the scan started); sends the *_deleted signals."
            ),
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read Morph's API and say what would change; write nothing.",
        )
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help=(
                "Queue one task per connection on the task backend (TASK_BACKEND, TASK_QUEUE) "
                "instead of syncing here: the workers sync the connections in parallel."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if missing is not None:
            raise CommandError(str(missing))
        if not conf.API_KEY or not conf.API_SECRET:
            raise CommandError(
                "Morph's API credentials are not configured: set MORPH_WEBHOOKS['API_KEY'] and "
                "MORPH_WEBHOOKS['API_SECRET'] (Morph's dashboard, API keys)."
            )
        if options["all"] and options["owner"]:
            raise CommandError("--owner goes with --connector, not with --all.")
        if options["connector"] is not None and not options["owner"]:
            raise CommandError("--connector needs --owner: a connection is a connector for one owner.")
        for option in ("connector", "owner"):
            if options[option] is not None and not 0 < len(options[option]) <= ID_LENGTH:
                raise CommandError(f"--{option} must be 1 to {ID_LENGTH} characters.")
        if options["enqueue"] and options["dry_run"]:
            raise CommandError("--dry-run shows here what a sync would change: it cannot be queued.")
        connections = self.connections(options)
        if not connections:
            self.stdout.write(
                "No connection is known yet: one is registered with its first event, or add one in the admin."
            )
            return
        if options["enqueue"]:
            self.enqueue(connections, options)
            return
        try:
            with stopped_by_sigterm():
                problems = self.sync(connections, options)
        except Terminated as exc:
            raise CommandError(
                f"Stopped by {exc}, as by Ctrl-C: the sync was recorded as interrupted and its "
                "connection freed; the next run resumes after the last page applied."
            ) from None
        if problems:
            raise CommandError(" ".join(problems))

    def sync(self, connections: list[Connection], options: dict[str, Any]) -> list[str]:
        """Sync each connection in turn; why each that did not succeed failed."""
        specs = models_to_sync(options["model"] or ())
        problems = []
        for connection in connections:
            self.stdout.write(
                f"Syncing {connection}{' (dry run: nothing is written)' if options['dry_run'] else ''}"
            )
            progress = Progress(self.stdout) if self.stdout.isatty() else None
            try:
                report = sync_connection(
                    connection,
                    specs,
                    delete_missing=options["delete_missing"],
                    dry_run=options["dry_run"],
                    progress=self.show_model if progress is None else progress.done(self.show_model),
                    on_page=None if progress is None else progress.show,
                )
            except SyncRunning as exc:
                self.stderr.write(f"  {exc}")
                problems.append(str(exc))
                continue
            self.show_report(report)
            if not report.ok:
                problems.append(report.problem())
        return problems

    def enqueue(self, connections: list[Connection], options: dict[str, Any]) -> None:
        problem = sync_backend_problem(inline_is_usable=True)
        if problem:
            raise CommandError(
                f"{problem} Configure a task backend with workers (TASKS, MORPH_WEBHOOKS['TASK_BACKEND']), "
                "or sync here without --enqueue: "
                + (
                    "python manage.py morph_webhooks_sync --all"
                    if options["all"]
                    else connections[0].sync_command()
                )
            )
        inline = bool(sync_backend_problem(inline_is_usable=False))
        if inline:
            self.stdout.write(
                f"The task backend {conf.TASK_BACKEND!r} runs each task at once: the syncs run here, one by one."
            )
        models = [spec.morph_model for spec in models_to_sync(options["model"] or ())]
        for connection in connections:
            enqueue_sync(connection, models, delete_missing=options["delete_missing"])
            self.stdout.write(f"Queued a sync of {connection}")
        count = f"{len(connections)} sync{'' if len(connections) == 1 else 's'}"
        if inline:
            self.stdout.write(f"{count} run; each connection's admin page shows the outcome.")
        else:
            self.stdout.write(
                f"{count} queued on the task backend {conf.TASK_BACKEND!r}: its workers run "
                f"{'it' if len(connections) == 1 else 'them'}; "
                "each connection's admin page shows the outcome."
            )

    def connections(self, options: dict[str, Any]) -> list[Connection]:
        if options["all"]:
            return list(Connection.objects.order_by("connector_id", "owner_id"))
        connector, owner = options["connector"], options["owner"]
        if options["dry_run"]:
            connection = Connection.objects.filter(connector_id=connector, owner_id=owner).first()
            return [connection or Connection(connector_id=connector, owner_id=owner)]
        # Backfill on day one: a connection named here is known from now on.
        return [Connection.objects.get_or_create(connector_id=connector, owner_id=owner)[0]]

    def show_model(self, model: ModelSync) -> None:
        self.stdout.write(f"  {model.summary()}")
        for note in model.notes:
            self.stdout.write(f"    {note}")
        for failure in model.failures:
            self.stdout.write(f"    failed: {failure}")
        if model.counts["failed"] > len(model.failures):
            self.stdout.write(f"    ... and {model.counts['failed'] - len(model.failures)} more invalid")

    def show_report(self, report: SyncReport) -> None:
        if report.error:
            self.stderr.write(f"  {report.error}")
        totals = {
            outcome: sum(counts[outcome] for counts in report.counts().values()) for outcome in OUTCOMES
        }
        self.stdout.write(
            f"{report.connection}: {'ok' if report.ok else 'FAILED'}: "
            + ", ".join(f"{count} {outcome}" for outcome, count in totals.items())
        )
