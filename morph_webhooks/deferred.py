"""The app's tasks, on Django's Tasks framework (``django.tasks``, or the ``django-tasks`` backport
on Django 5.2): applying a queued delivery and the sweeper (:mod:`morph_webhooks.queue` does the
work), and a connection's sync from Morph's API, run by a worker.

Importing this module declares the tasks, which loads the default task backend. Task workers
import it (through the tasks' paths, stored with each queued task: they must not move); the app
imports it only to enqueue a task, so that sync mode and ``QUEUE = "deliveries"`` need neither the
framework nor a loadable TASKS.
"""

from __future__ import annotations

from functools import partial

from django.db import transaction

from .conf import conf
from .extras import MissingDependency
from .intake import run_delivery
from .models import Connection
from .queue import stores_tasks_in_the_database, sweep

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    try:
        from django_tasks import task  # type: ignore[no-redef,import-not-found,unused-ignore]
    except ImportError as exc:
        raise MissingDependency("Django 5.2's task framework", "django-tasks", "tasks") from exc

# The task framework's backends without workers: one runs a task in the enqueueing process at
# once, the other (for tests) never runs it.
RUNS_INLINE = "ImmediateBackend"
NEVER_RUNS = "DummyBackend"


@task()
def process_delivery(delivery_id: int) -> str | None:
    outcome = run_delivery(delivery_id)
    return None if outcome is None else str(outcome)


@task()
def sweep_pending() -> int:
    return sweep()


@task()
def sync_connection_task(connection_id: int, models: list[str], delete_missing: bool) -> str | None:
    """Sync one connection from Morph's API, as ``morph_webhooks_sync`` does; the run is recorded
    on the connection. Returns "succeeded"; or, having synced nothing, None when the connection is
    gone and why when another sync of it is running. Raises SyncFailed when the sync failed, so
    that the task backend records a failed task too."""
    # Reading Morph's API needs httpx (the sync extra): deferred mode for webhooks must not.
    from .sync import SyncFailed, SyncRunning, models_to_sync, sync_connection

    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None:
        return None
    try:
        report = sync_connection(connection, models_to_sync(models), delete_missing=delete_missing)
    except SyncRunning as exc:
        # Not a failure: the sync asked for is running already.
        return str(exc)
    if not report.ok:
        raise SyncFailed(report.problem())
    return "succeeded"


def sync_backend_problem(*, inline_is_usable: bool) -> str:
    """Why the configured task backend cannot run syncs in workers, or "" when it can. A backend
    that runs tasks inline is usable only where the caller may wait for the syncs."""
    try:
        backend = sync_connection_task.using(
            backend=conf.TASK_BACKEND, queue_name=conf.TASK_QUEUE
        ).get_backend()
    except Exception as exc:  # the task framework reports a bad TASKS setting in several ways
        return f"The task backend {conf.TASK_BACKEND!r} cannot be loaded ({type(exc).__name__}: {exc})."
    if type(backend).__name__ == NEVER_RUNS:
        return f"The task backend {conf.TASK_BACKEND!r} ({NEVER_RUNS}) never runs a task."
    if not inline_is_usable and type(backend).__name__ == RUNS_INLINE:
        return (
            f"The task backend {conf.TASK_BACKEND!r} ({type(backend).__name__}) has no workers: "
            "it would run the sync here and now."
        )
    return ""


def enqueue_sync(connection: Connection, models: list[str], delete_missing: bool = False) -> None:
    """Queue a sync of ``connection`` on the configured task backend (TASK_BACKEND, TASK_QUEUE), of
    ``models`` (Morph model names; empty: every stored model)."""
    queued = sync_connection_task.using(backend=conf.TASK_BACKEND, queue_name=conf.TASK_QUEUE)
    if stores_tasks_in_the_database(queued.get_backend()):
        queued.enqueue(connection.pk, models, delete_missing)
    else:
        # An outside queue's worker must find the connection committed.
        transaction.on_commit(partial(queued.enqueue, connection.pk, models, delete_missing))
