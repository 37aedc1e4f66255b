"""Fixtures shared by the test modules; plain helpers are in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from morph_webhooks import models, signals
from morph_webhooks.testing import morph_headers, post_event
from tests.helpers import raising_receiver


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


@pytest.fixture(autouse=True)
def forget_registered_connections() -> None:
    """Each test starts from an empty database: this process has registered no connection yet."""
    models._REGISTERED.clear()


@pytest.fixture
def known_connection(transactional_db: None) -> None:
    """The test connection (morph_headers()'s), registered: for counting the statements of every
    event but a new connection's first, which costs one more, once per process."""
    headers = morph_headers()
    models.Connection.register(headers["x-conector-id"], headers["x-owner-id"])


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


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    """The superuser behind pytest-django's ``admin_client``, without a password: hashing one costs
    more than most tests that use it."""
    return django_user_model.objects.create_superuser("admin", "admin@example.com", None)


@pytest.fixture
def staff(client: Client, django_user_model: Any) -> Any:
    """A staff member logged in with ``client``, with no permission until a test grants some."""
    user = django_user_model.objects.create_user("staff", password=None, is_staff=True)
    client.force_login(user)
    return user


@pytest.fixture
def explode_on_boom() -> Iterator[None]:
    """A receiver that fails for the opportunity ``opp_boom`` and lets every other one through."""
    with raising_receiver(
        signals.opportunity_created, RuntimeError, "receiver exploded", remote_id="opp_boom"
    ):
        yield
