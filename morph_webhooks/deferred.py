"""The app's tasks, on Django's Tasks framework (``django.tasks``, or the ``django-tasks`` backport
on Django 5.2): applying a queued delivery (:func:`morph_webhooks.intake.run_delivery` does the
work), the sweeper (:mod:`morph_webhooks.sweeper`), and a connection's sync from Morph's API
(:mod:`morph_webhooks.sync`), run by a worker.

Importing this module declares the tasks, which loads the default task backend. Task workers
import it (through the tasks' paths, stored with each queued task: they must not move); the app
only to enqueue a task (:mod:`morph_webhooks.apply` finds the delivery's task by its path,
:mod:`morph_webhooks.sync_queue` imports the sync's), so that sync mode and ``QUEUE =
"deliveries"`` need neither the framework nor a loadable TASKS.
"""

from __future__ import annotations

from .extras import MissingDependency
from .intake import run_delivery
from .models import Connection
from .sweeper import sweep

try:
    from django.tasks import task
except ImportError:  # Django 5.2
    try:
        from django_tasks import task  # type: ignore[no-redef,import-not-found,unused-ignore]
    except ImportError as exc:
        raise MissingDependency("Django 5.2's task framework", "django-tasks", "tasks") from exc


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
