"""The SQL statements of the event path that are not compiled by the ORM on every event, and why.

Every event's first statement claims its idempotency key or, when the key is known, counts one
more delivery of it: ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, which PostgreSQL and
SQLite (3.35 and later) both run. The ORM can only spell it as two statements (an UPDATE, then an
INSERT when the UPDATE found nothing), and each ORM statement costs more Python to compile than
the database takes to run it. The statement is built once per database connection alias, with
the table and column names read from the model's ``_meta`` and quoted by the backend, so that a
project's ``db_table`` or ``db_column`` does not break it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field
from django.utils import timezone

from .models import IdempotencyKey, MirroredResource

# Columns the claim writes, in the order of its parameters.
_CLAIMED = (
    "connector_id",
    "owner_id",
    "key",
    "event",
    "remote_id",
    "outcome",
    "deliveries",
    "first_seen_at",
    "last_seen_at",
)

# Per connection alias: the statement, and the fields that prepare its parameters.
_claims: dict[str, tuple[str, list[Field[Any, Any]]]] = {}


def claim_or_count_key(
    *,
    connector_id: str,
    owner_id: str,
    key: str,
    event: str,
    remote_id: str,
    outcome: str,
    lock_timeout: float,
) -> bool:
    """Claim the key with ``outcome``, or count one more delivery of it when it was claimed before
    (committed, or by a concurrent twin: the statement waits for the twin's transaction on the
    unique index, then counts). True when claimed here. ``lock_timeout`` (seconds, 0: none) bounds
    lock waits for the rest of the transaction on PostgreSQL, from this statement on."""
    connection = connections[router.db_for_write(IdempotencyKey)]
    claim = _claims.get(connection.alias)
    if claim is None:
        claim = _claims[connection.alias] = (_claim_sql(connection), _fields())
    sql, fields = claim
    now = timezone.now()
    values = (connector_id, owner_id, key, event, remote_id, outcome, 1, now, now)
    params = [field.get_db_prep_save(value, connection) for field, value in zip(fields, values, strict=True)]
    prefix = _lock_timeout_prefix(connection, lock_timeout)
    with connection.cursor() as cursor:
        if prefix and not _one_round_trip(connection):
            cursor.execute(prefix)
            prefix = ""
        cursor.execute(prefix + sql, params)
        if prefix and _psycopg3():
            # psycopg 3 keeps each statement's result: the claim's is the second.
            cursor.nextset()
        (deliveries,) = cursor.fetchone()
    # Written 1 when claimed, raised to 2 or more when counted: the app writes no key with fewer
    # than one delivery (the column's default, and only ever incremented).
    return bool(deliveries == 1)


def _fields() -> list[Field[Any, Any]]:
    by_name = {field.name: field for field in IdempotencyKey._meta.concrete_fields}
    return [by_name[name] for name in _CLAIMED]


def _claim_sql(connection: BaseDatabaseWrapper) -> str:
    meta = IdempotencyKey._meta
    quote = connection.ops.quote_name
    columns = {field.name: str(field.column) for field in meta.concrete_fields}

    def column(name: str) -> str:
        return quote(columns[name])

    # The conflict target is the unique constraint that makes a concurrent twin a duplicate.
    (unique,) = (c for c in meta.constraints if c.name == "morph_webhooks_idempotencykey_unique")
    table, deliveries, last_seen = quote(meta.db_table), column("deliveries"), column("last_seen_at")
    return (
        f"INSERT INTO {table} ({', '.join(column(name) for name in _CLAIMED)}) "
        f"VALUES ({', '.join(['%s'] * len(_CLAIMED))}) "
        f"ON CONFLICT ({', '.join(column(name) for name in unique.fields)}) "  # type: ignore[attr-defined]
        f"DO UPDATE SET {deliveries} = {table}.{deliveries} + 1, {last_seen} = EXCLUDED.{last_seen} "
        f"RETURNING {deliveries}"
    )


def _lock_timeout_prefix(connection: BaseDatabaseWrapper, lock_timeout: float) -> str:
    if connection.vendor != "postgresql" or lock_timeout <= 0:
        # SQLite has no such setting: there the connection's busy timeout bounds the wait.
        return ""
    # SET LOCAL lasts until the transaction ends (the outer one, when nested); the session's own
    # setting, which the project may rely on elsewhere, is left as it was.
    return f"SET LOCAL lock_timeout = '{max(round(lock_timeout * 1000), 1)}ms'; "


def bound_lock_wait(lock_timeout: float) -> None:
    """``SET LOCAL lock_timeout`` as a statement of its own, for a transaction whose first
    statement is not the claim."""
    connection = connections[router.db_for_write(IdempotencyKey)]
    prefix = _lock_timeout_prefix(connection, lock_timeout)
    if prefix:
        with connection.cursor() as cursor:
            cursor.execute(prefix.rstrip("; "))


def _one_round_trip(connection: Any) -> bool:
    """Whether the SET LOCAL can travel with the claim in one query string.

    Sent together, as PostgreSQL's simple query protocol does, the two statements are parsed
    (grammar only, no table touched) and then analysed, planned and run one after the other: the
    SET LOCAL has run before the claim's analysis opens its table, which is where the claim first
    waits for a lock (behind a migration's ACCESS EXCLUSIVE, say). A ``set_config()`` inside the
    claim would run only after that lock was taken, so it would not bound that wait. Server-side
    binding (psycopg 3's ``server_side_binding`` option) sends prepared statements, which hold one
    statement each: then the SET LOCAL goes first, on its own.
    """
    return connection.settings_dict["OPTIONS"].get("server_side_binding") is not True or not _psycopg3()


def _psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


@dataclass(frozen=True)
class _RowLock:
    sql: str
    # Where the connector, owner and remote ids go among the statement's parameters.
    order: tuple[int, int, int]
    attnames: list[str]
    # Column position -> the backend's and the field's converters of what the driver returns.
    converters: dict[int, tuple[list[Callable[..., Any]], Any]]


_row_locks: dict[tuple[type[MirroredResource], str], _RowLock] = {}
_IDS = ("connector_id", "owner_id", "remote_id")


def locked_row(
    model: type[MirroredResource], connector_id: str, owner_id: str, remote_id: str
) -> MirroredResource | None:
    """The stored resource, locked (``SELECT ... FOR UPDATE``) until the transaction ends; None
    when there is none yet.

    What ``model._default_manager.select_for_update().filter(...).first()`` returns, but compiled
    by the ORM once per model and database rather than on every event: building and compiling the
    queryset cost more than running it. The ORM writes the statement (names from ``_meta``,
    quoting, the backend's FOR UPDATE or none on SQLite) and the converters of its columns; only
    its parameters change between events. The resource's unique constraint makes LIMIT needless.
    """
    connection = connections[router.db_for_write(model)]
    lock = _row_locks.get((model, connection.alias))
    if lock is None:
        lock = _row_locks[(model, connection.alias)] = _compile_row_lock(model, connection)
    ids = (connector_id, owner_id, remote_id)
    params = [""] * 3
    for position, value in zip(lock.order, ids, strict=True):
        params[position] = value
    with connection.cursor() as cursor:
        cursor.execute(lock.sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for position, (converters, expression) in lock.converters.items():
        value = values[position]
        for convert in converters:
            value = convert(value, expression, connection)
        values[position] = value
    return model.from_db(connection.alias, lock.attnames, values)


def _compile_row_lock(model: type[MirroredResource], connection: BaseDatabaseWrapper) -> _RowLock:
    # Placeholders stand for the ids, so that the compiled parameters tell where each goes.
    placeholders = {name: f"\x00{name}" for name in _IDS}
    queryset = model._default_manager.select_for_update().filter(**placeholders)
    compiler = queryset.query.get_compiler(using=connection.alias)
    sql, params = compiler.as_sql()
    assert len(params) == len(_IDS), "the row lock's parameters are the three ids"
    order = tuple(list(params).index(placeholders[name]) for name in _IDS)
    selected = [column[0] for column in compiler.select]
    return _RowLock(
        sql=sql,
        order=order,  # type: ignore[arg-type]
        attnames=[expression.target.attname for expression in selected],
        converters=compiler.get_converters(selected),
    )
