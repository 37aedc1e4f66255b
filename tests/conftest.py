from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from morph_webhooks import signals
from morph_webhooks.testing import morph_headers, post_event


class SignalRecorder:
    """Connects to the three signals and keeps every call's arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def receiver(self, name: str) -> Any:
        def receive(**kwargs: Any) -> None:
            self.calls.append((name, kwargs))

        return receive

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def sent_signals() -> Iterator[SignalRecorder]:
    recorder = SignalRecorder()
    receivers = {
        "created": signals.opportunity_created,
        "updated": signals.opportunity_updated,
        "deleted": signals.opportunity_deleted,
    }
    handlers = {name: recorder.receiver(name) for name in receivers}
    for name, signal in receivers.items():
        signal.connect(handlers[name], weak=False, dispatch_uid=f"test-{name}")
    yield recorder
    for name, signal in receivers.items():
        signal.disconnect(dispatch_uid=f"test-{name}")


@pytest.fixture
def send(client: Client) -> Any:
    """Post a payload with a fresh idempotency key unless ``key`` is given."""

    def send(payload: Any, key: str | None = None, **kwargs: Any) -> Any:
        headers = {**morph_headers(key), **kwargs.pop("headers", {})}
        return post_event(client, payload, headers=headers, **kwargs)

    return send
