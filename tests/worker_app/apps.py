"""Receivers for worker processes started by the tests, switched on by environment variables:
a worker cannot share the test's in-memory receivers, so it reports through files."""

from __future__ import annotations

import os
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.db import transaction

from morph_webhooks import signals


def append(line: str) -> None:
    with Path(os.environ["MORPH_TEST_SIGNAL_FILE"]).open("a") as file:
        file.write(line)


def record(name: str) -> Any:
    def receiver(instance: Any, event: Any, **kwargs: Any) -> None:
        # Only what commits is written: a killed worker's rolled-back event leaves no line.
        transaction.on_commit(partial(append, f"{name} {event.idempotency_key}\n"))

    return receiver


def stall(instance: Any, event: Any, **kwargs: Any) -> None:
    marker = Path(os.environ["MORPH_TEST_STALL_FILE"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(120)  # the test kills the worker meanwhile


def slow(**kwargs: Any) -> None:
    # A receiver that takes its time (a CRM call), so that several workers overlap.
    time.sleep(float(os.environ["MORPH_TEST_SLOW"]))


def gate(**kwargs: Any) -> None:
    # The first event a worker applies waits, its pid written, until the test opens the gate: the
    # test knows then that every worker holds a delivery of its own.
    directory = Path(os.environ["MORPH_TEST_GATE_DIR"])
    waiting = directory / str(os.getpid())
    if waiting.exists():
        return
    waiting.touch()
    deadline = time.monotonic() + 60
    while not (directory / "open").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def kill(instance: Any, **kwargs: Any) -> None:
    # A receiver that ends its process (a crash in a C extension, the OOM killer) on one opportunity.
    if instance.remote_id == os.environ["MORPH_TEST_KILL"]:
        os.kill(os.getpid(), signal.SIGKILL)


def record_failure(delivery: Any, **kwargs: Any) -> None:
    append(f"delivery_failed {delivery.idempotency_key}\n")


def fail(**kwargs: Any) -> None:
    raise RuntimeError("receiver failure requested by the test")


def fail_once(**kwargs: Any) -> None:
    marker = Path(os.environ["MORPH_TEST_FAIL_ONCE_FILE"])
    if not marker.exists():
        marker.touch()  # outside the transaction: the retry finds it and succeeds
        fail()


class WorkerAppConfig(AppConfig):
    name = "tests.worker_app"

    def ready(self) -> None:
        if os.environ.get("MORPH_TEST_SIGNAL_FILE"):
            for name in ("created", "updated", "deleted"):
                getattr(signals, f"opportunity_{name}").connect(record(name), weak=False)
            signals.delivery_failed.connect(record_failure, weak=False)
        if os.environ.get("MORPH_TEST_STALL_FILE"):
            signals.opportunity_created.connect(stall, weak=False)
        if os.environ.get("MORPH_TEST_SLOW"):
            for name in ("created", "updated", "deleted"):
                getattr(signals, f"opportunity_{name}").connect(slow, weak=False)
        if os.environ.get("MORPH_TEST_GATE_DIR"):
            for name in ("created", "updated", "deleted"):
                getattr(signals, f"opportunity_{name}").connect(gate, weak=False)
        if os.environ.get("MORPH_TEST_KILL"):
            signals.opportunity_created.connect(kill, weak=False)
        if os.environ.get("MORPH_TEST_FAIL"):
            signals.opportunity_created.connect(fail, weak=False)
        if os.environ.get("MORPH_TEST_FAIL_ONCE_FILE"):
            signals.opportunity_created.connect(fail_once, weak=False)
