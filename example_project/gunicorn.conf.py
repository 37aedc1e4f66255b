"""gunicorn's settings for the example project: ``gunicorn -c example_project/gunicorn.conf.py``.

Several worker processes each count requests in their own memory, so a scrape of
``/webhooks/morph/metrics/`` would only show the share of whichever worker answers it. With
``PROMETHEUS_MULTIPROC_DIR`` set (to a directory the workers can write, in the environment that
starts gunicorn), prometheus-client's multiprocess mode has each process write its counts to files
there, and a scrape sums them all. Task workers (``manage.py db_worker``, ``manage.py
morph_webhooks_worker``) given the same variable add their processing times to the same sums.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

wsgi_app = "example_project.wsgi"
bind = "127.0.0.1:8000"
workers = 2


def on_starting(server: Any) -> None:
    # prometheus-client wants no file of an earlier run at start: its processes' counts would stay
    # in the sums for good (Prometheus reads the drop as a counter reset). Files of processes still
    # running (task workers sharing the directory) are kept: they keep writing to them.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        for path in Path(directory).glob("*.db"):
            if not _running(path.stem.rpartition("_")[2]):
                path.unlink()


def _running(pid: str) -> bool:
    """Whether the process ``pid`` (from a file name such as ``counter_1234.db``) still runs."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def child_exit(server: Any, worker: Any) -> None:
    # A worker that exits (restarted, or max_requests reached) hands back its live gauges; its
    # counters stay in the sums.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
