"""Queueing a connection's sync for the task backend's workers (the admin's action and
``morph_webhooks_sync --enqueue``). Only queueing a sync needs the task framework: it is loaded
(with the tasks) when a sync is to be queued, not when this module is imported."""

from __future__ import annotations

from functools import partial

from django.db import transaction

from .apply import stores_tasks_in_the_database
from .conf import conf
from .models import Connection

# The task framework's backends without workers: one runs a task in the enqueueing process at
# once, the other (for tests) never runs it.
RUNS_INLINE = "ImmediateBackend"
NEVER_RUNS = "DummyBackend"


def sync_backend_problem(*, inline_is_usable: bool) -> str:
    """Why the configured task backend cannot run syncs in workers, or "" when it can (the task
    framework installed, TASKS loadable). A backend that runs tasks inline is usable only where
    the caller may wait for the syncs."""
    try:
        from .deferred import sync_connection_task
    except ImportError as exc:
        return f"Django's task framework is not available ({exc})."
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
    ``models`` (Morph model names; empty: every stored model), once :func:`sync_backend_problem`
    has found none."""
    from .deferred import sync_connection_task

    queued = sync_connection_task.using(backend=conf.TASK_BACKEND, queue_name=conf.TASK_QUEUE)
    if stores_tasks_in_the_database(queued.get_backend()):
        queued.enqueue(connection.pk, models, delete_missing)
    else:
        # An outside queue's worker must find the connection committed.
        transaction.on_commit(partial(queued.enqueue, connection.pk, models, delete_missing))
