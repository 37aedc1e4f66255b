"""The tasks' former import path. django-tasks stores a queued task by its function's path
(``Task.module_path``: a database row's ``task_path``, an RQ job's function), so tasks enqueued
before they moved to :mod:`morph_webhooks.deferred` name this module; it must keep resolving them
for as long as such tasks may be waiting."""

from __future__ import annotations

from .deferred import process_delivery, sweep_pending

__all__ = ["process_delivery", "sweep_pending"]
