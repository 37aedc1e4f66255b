"""Plain helpers shared by the test modules; the fixtures built on them are in conftest.py."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, connections
from django.db.models import Model
from django.dispatch import Signal
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from morph_webhooks.testing import morph_headers
from morph_webhooks.testing.factories import REMOTE_TIMESTAMP

URL = "/webhooks/morph/"
SECRET = "test-secret-0123456789abcdef"  # the one tests/settings.py configures

# The factories' createdAt and updatedAt, before opportunity_event()'s default; ``at(minutes)`` counts
# from it.
T0 = REMOTE_TIMESTAMP

# For what the SQLite test database cannot show: concurrent transactions, row locks, a dropped
# connection, worker processes sharing the database.
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: DATABASE_URL=postgres://postgres@127.0.0.1:5432/morph_webhooks make test",
)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def raw_post(
    client: Client,
    body: bytes | str,
    *,
    path: str = URL,
    content_type: str = "application/json",
    **headers: str,
) -> Any:
    """Post ``body`` as it is, with Morph's headers: for what ``post_event`` would not send."""
    return client.post(path, data=body, content_type=content_type, headers={**morph_headers(), **headers})


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements run, savepoints included; BEGIN and COMMIT are left out because
    whether they are logged depends on the backend and the Django version."""
    captured: list[str] = []
    with CaptureQueriesContext(connection) as context:
        yield captured
    captured.extend(q["sql"] for q in context.captured_queries if q["sql"].upper() not in ("BEGIN", "COMMIT"))


@contextmanager
def locked_elsewhere(sql: str, params: list[Any] | None = None) -> Iterator[None]:
    """While the block runs, another database session holds the locks ``sql`` takes, in a
    transaction it rolls back after the block. The session stays idle meanwhile, as a long
    transaction or a migration would: no thread is needed to keep its locks."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(sql, params)
            try:
                yield
            finally:
                cursor.execute("ROLLBACK")
    finally:
        other.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def grant(user: Any, *codenames: str) -> None:
    user.user_permissions.add(*(Permission.objects.get(codename=codename) for codename in codenames))


@contextmanager
def raising_receiver(
    signal: Signal, error: type[Exception], message: str, *, remote_id: str | None = None
) -> Iterator[Callable[[], None]]:
    """While the block runs, a receiver of ``signal`` raises, as a project's own code might (a bug,
    a service it calls being down); only for the opportunity ``remote_id`` when one is given.

    Yields a function that disconnects the receiver before the block ends, as when the bug is fixed.
    """

    def receiver(instance: Any = None, **kwargs: Any) -> None:
        if remote_id is None or instance.remote_id == remote_id:
            raise error(message)

    dispatch_uid = f"test-raising-receiver-{id(receiver)}"

    def fix() -> None:
        signal.disconnect(dispatch_uid=dispatch_uid)

    signal.connect(receiver, weak=False, dispatch_uid=dispatch_uid)
    try:
        yield fix
    finally:
        fix()


# Admin pages


def admin_url(obj: Model, view: str) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[obj.pk])


def listed(client: Client, changelist: str, query: str = "") -> list[Any]:
    response = client.get(f"{reverse(changelist)}?{query}")
    assert response.status_code == 200
    # A filter value the admin does not understand redirects with ?e=1 instead of filtering.
    assert "e=1" not in response.request["QUERY_STRING"]
    return list(response.context["cl"].result_list)


def filter_titles(client: Client, changelist: str) -> list[str]:
    return [str(spec.title) for spec in client.get(reverse(changelist)).context["cl"].filter_specs]


def action_names(response: Any) -> list[str]:
    form = response.context["action_form"]
    return [] if form is None else [name for name, _ in form.fields["action"].choices if name]
