"""The SQL statements of the event path that are not compiled by the ORM on every event, and why.

Each ORM statement costs more Python to build and compile than the database takes to run it (about
1 ms an event on a small machine), so the event path's statements are compiled once per model and
database connection alias and only their parameters change. Names always come from the models'
``_meta``, quoted by the backend, so that a project's ``db_table`` or ``db_column`` does not break
them. This module sits below :mod:`.models`: :mod:`.store`, which writes with it, passes in the
models it works on.

Every event's first statement claims its idempotency key or, when the key is known, counts one
more delivery of it: ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, which PostgreSQL and
SQLite (3.35 and later) both run. The ORM can only spell it as two statements (an UPDATE, then an
INSERT when the UPDATE found nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple, TypeVar, cast

from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

from .resources.base import MirroredResource
from .resources.links import Link

T = TypeVar("T")


class KeyClaim(NamedTuple):
    """What claiming an idempotency key writes: the key (connector, owner, key), the event it
    came with, and the outcome it is claimed for. Its fields are named as the key model's."""

    connector_id: str
    owner_id: str
    key: str
    event: str
    remote_id: str
    outcome: str


# Columns the claim writes, in the order of its parameters.
_CLAIMED = (
    *KeyClaim._fields,
    "deliveries",
    "first_seen_at",
    "last_seen_at",
)

# Every compiled statement, by what it is for: its kind, its models and the database alias.
_compiled_statements: dict[tuple[Any, ...], Any] = {}


def _compiled(key: tuple[Any, ...], build: Callable[[], T]) -> T:
    """``build()``'s statement for ``key``, compiled the first time only."""
    try:
        return cast(T, _compiled_statements[key])
    except KeyError:
        compiled = _compiled_statements[key] = build()
        return compiled


def claim_or_count_key(key_model: type[Model], claim: KeyClaim, lock_timeout: float) -> bool:
    """Claim the key (a row of ``key_model``, the IdempotencyKey model), or count one more
    delivery of it when it was claimed before (committed, or by a concurrent twin: the statement
    waits for the twin's transaction on the unique index, then counts). True when claimed here.
    ``lock_timeout`` (seconds, 0: none) bounds lock waits for the rest of the transaction on
    PostgreSQL, from this statement on."""
    connection = connections[router.db_for_write(key_model)]
    sql, fields = _compiled(
        ("claim", key_model, connection.alias),
        lambda: (_claim_sql(key_model, connection), _fields(key_model)),
    )
    (deliveries,) = _after_lock_timeout(connection, lock_timeout, sql, _key_params(fields, connection, claim))
    # Written 1 when claimed, raised to 2 or more when counted: the app writes no key with fewer
    # than one delivery (the column's default, and only ever incremented).
    return bool(deliveries == 1)


def _key_params(fields: list[Field[Any, Any]], connection: BaseDatabaseWrapper, claim: KeyClaim) -> list[Any]:
    """The claim's parameters: the key's identity and outcome, one delivery, first and last seen now."""
    now = timezone.now()
    claimed = (*claim, 1, now, now)
    return [field.get_db_prep_save(value, connection) for field, value in zip(fields, claimed, strict=True)]


def _after_lock_timeout(
    connection: BaseDatabaseWrapper, lock_timeout: float, sql: str, params: list[Any]
) -> tuple[Any, ...]:
    """Run ``sql`` after ``SET LOCAL lock_timeout`` (PostgreSQL), in the same query string unless
    prepared statements forbid it; its one row."""
    prefix = _lock_timeout_prefix(connection, lock_timeout)
    # As the ORM's UPDATE did: an error marks an enclosing atomic block for rollback.
    with transaction.mark_for_rollback_on_error(using=connection.alias), connection.cursor() as cursor:
        if prefix and not _one_round_trip(connection):
            cursor.execute(prefix.removesuffix("; "))
            prefix = ""
        cursor.execute(prefix + sql, params)
        if prefix and _psycopg3():
            # psycopg 3 keeps each statement's result: the claim's is the second.
            cursor.nextset()
        row: tuple[Any, ...] = cursor.fetchone()
    return row


def _fields(key_model: type[Model]) -> list[Field[Any, Any]]:
    by_name = {field.name: field for field in key_model._meta.concrete_fields}
    return [by_name[name] for name in _CLAIMED]


def _claim_sql(key_model: type[Model], connection: BaseDatabaseWrapper) -> str:
    meta = key_model._meta
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


def bound_lock_wait(key_model: type[Model], lock_timeout: float) -> None:
    """``SET LOCAL lock_timeout`` as a statement of its own, for a transaction whose first
    statement is not the claim (on the database of ``key_model``'s claims)."""
    connection = connections[router.db_for_write(key_model)]
    prefix = _lock_timeout_prefix(connection, lock_timeout)
    if prefix:
        with connection.cursor() as cursor:
            cursor.execute(prefix.removesuffix("; "))


def settle_key(key_model: type[Model], claim: KeyClaim, was: str | None = None) -> bool:
    """Set the claimed key's outcome to ``claim.outcome`` (only if it was ``was``, when given);
    False when no row changed."""
    connection = connections[router.db_for_write(key_model)]
    conditional = was is not None
    sql = _compiled(
        ("settle", key_model, connection.alias, conditional),
        lambda: _settle_sql(key_model, connection, conditional),
    )
    params = [str(claim.outcome), claim.connector_id, claim.owner_id, claim.key]
    params += [] if was is None else [str(was)]
    with transaction.mark_for_rollback_on_error(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount)


def _settle_sql(key_model: type[Model], connection: BaseDatabaseWrapper, conditional: bool) -> str:
    meta = key_model._meta
    quote = connection.ops.quote_name
    columns = {field.name: quote(str(field.column)) for field in meta.concrete_fields}
    where = " AND ".join(f"{columns[name]} = %s" for name in ("connector_id", "owner_id", "key"))
    if conditional:
        where += f" AND {columns['outcome']} = %s"
    return f"UPDATE {quote(meta.db_table)} SET {columns['outcome']} = %s WHERE {where}"


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
class _Select:
    sql: str
    # Where each looked-up value goes among the statement's parameters, in the lookups' order.
    order: tuple[int, ...]
    attnames: list[str]
    # Column position -> the backend's and the field's converters of what the driver returns.
    converters: dict[int, tuple[list[Callable[..., Any]], Any]]


# Stand-ins for the looked-up values while the ORM compiles a statement: its parameters then tell
# where each value goes.
_IDS: dict[str, Any] = {
    "connector_id": "\x00connector_id",
    "owner_id": "\x00owner_id",
    "remote_id": "\x00remote_id",
}
_PK: dict[str, Any] = {"pk": -7_340_033}


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
    return _select_one(model, True, _IDS, (connector_id, owner_id, remote_id))  # type: ignore[return-value]


def by_pk(model: type[Model], pk: Any) -> Model | None:
    """``model._default_manager.filter(pk=pk).first()``, compiled once as :func:`locked_row` is."""
    return _select_one(model, False, _PK, (pk,))


def _select_one(
    model: type[Model], for_update: bool, stand_ins: dict[str, Any], values: tuple[Any, ...]
) -> Model | None:
    connection = connections[router.db_for_write(model) if for_update else router.db_for_read(model)]
    select = _compiled(
        ("select", model, connection.alias, for_update),
        lambda: _compile_select(model, connection, for_update, stand_ins),
    )
    params: list[Any] = [None] * len(values)
    for position, value in zip(select.order, values, strict=True):
        params[position] = value
    with connection.cursor() as cursor:
        cursor.execute(select.sql, params)
        row = cursor.fetchone()
    return None if row is None else _from_row(model, connection, select, row)


def _from_row(
    model: type[Model], connection: BaseDatabaseWrapper, select: _Select, row: Sequence[Any]
) -> Model:
    """The instance of ``model`` that ``row``, the columns of ``select``, holds, as the ORM reads it."""
    converted = list(row)
    for position, (converters, expression) in select.converters.items():
        value = converted[position]
        for convert in converters:
            value = convert(value, expression, connection)
        converted[position] = value
    return model.from_db(connection.alias, select.attnames, converted)


def claim_due(model: type[Model], status: str, due_by: datetime, leased_until: datetime) -> Model | None:
    """Lease the row of ``model`` (the WebhookDelivery model) in ``status`` whose
    ``next_attempt_at`` is the earliest not after ``due_by``: its ``next_attempt_at`` set to
    ``leased_until`` and one more of its ``attempts`` counted, in one statement, committed at once
    when no transaction is open. Returns the row as updated, or None when none is due.

    On PostgreSQL a row that another claim is taking is skipped (``FOR UPDATE SKIP LOCKED``)
    rather than waited for; SQLite's writers take turns. The ORM would spell it as a transaction
    of a SELECT and an UPDATE, and build both every time."""
    connection = connections[router.db_for_write(model)]
    claim = _compiled(("claim due", model, connection.alias), lambda: _compile_claim_due(model, connection))
    (due,) = (field for field in model._meta.concrete_fields if field.name == "next_attempt_at")
    params = [
        due.get_db_prep_save(leased_until, connection),
        status,
        due.get_db_prep_save(due_by, connection),
    ]
    with transaction.mark_for_rollback_on_error(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(claim.sql, params)
        row = cursor.fetchone()
    return None if row is None else _from_row(model, connection, claim, row)


def _compile_claim_due(model: type[Model], connection: BaseDatabaseWrapper) -> _Select:
    meta = model._meta
    quote = connection.ops.quote_name
    columns = {field.attname: quote(str(field.column)) for field in meta.concrete_fields}
    table, pk = quote(meta.db_table), quote(str(meta.pk.column))
    due, attempts = columns["next_attempt_at"], columns["attempts"]
    lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    # The columns a SELECT of the model reads, and their converters: the row is returned the same.
    every = _compile_select(model, connection, False, _PK)
    return _Select(
        sql=(
            f"UPDATE {table} SET {due} = %s, {attempts} = {attempts} + 1 WHERE {pk} = ("
            f"SELECT {pk} FROM {table} WHERE {columns['status']} = %s AND {due} <= %s "
            f"ORDER BY {due} LIMIT 1{lock}) "
            f"RETURNING {', '.join(columns[attname] for attname in every.attnames)}"
        ),
        order=(),
        attnames=every.attnames,
        converters=every.converters,
    )


def _compile_select(
    model: type[Model], connection: BaseDatabaseWrapper, for_update: bool, stand_ins: dict[str, Any]
) -> _Select:
    queryset = model._default_manager.all()
    if for_update:
        queryset = queryset.select_for_update()
    compiler = queryset.filter(**stand_ins).query.get_compiler(using=connection.alias)
    sql, params = compiler.as_sql()
    assert len(params) == len(stand_ins), "the statement's parameters are the looked-up values"
    order = tuple(list(params).index(value) for value in stand_ins.values())
    selected = [column[0] for column in compiler.select]
    return _Select(
        sql=sql,
        order=order,
        attnames=[expression.target.attname for expression in selected],
        converters=compiler.get_converters(selected),
    )


@dataclass(frozen=True)
class _Save:
    sql: str
    fields: list[Field[Any, Any]]


def insert(instance: Model) -> None:
    """``instance.save(force_insert=True)`` (its signals included) for a model with no parent and
    an auto-incremented primary key, the INSERT compiled once per model and database."""
    model = type(instance)
    connection = connections[router.db_for_write(model, instance=instance)]
    statement = _insert_statement(model, connection)
    params = _before_insert(instance, statement.fields, connection)
    with transaction.mark_for_rollback_on_error(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        (pk,) = cursor.fetchone()
    _stored(instance, pk, connection.alias)
    _after_insert(instance, connection.alias)


def _insert_statement(model: type[Model], connection: BaseDatabaseWrapper) -> _Save:
    return _compiled(("insert", model, connection.alias), lambda: _compile_insert(model, connection))


def _before_insert(
    instance: Model, fields: list[Field[Any, Any]], connection: BaseDatabaseWrapper
) -> list[Any]:
    """Send ``pre_save`` as save() does before an INSERT, and return ``instance``'s parameters: what
    the ORM's INSERT would write, each field's pre_save() value (auto_now...), prepared."""
    pre_save.send(
        sender=type(instance), instance=instance, raw=False, using=connection.alias, update_fields=None
    )
    return [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]


def _stored(instance: Model, pk: Any, alias: str) -> None:
    """Record on ``instance`` that its INSERT stored it under ``pk``, as save() does."""
    setattr(instance, instance._meta.pk.attname, pk)
    instance._state.db = alias
    instance._state.adding = False


def _after_insert(instance: Model, alias: str) -> None:
    post_save.send(
        sender=type(instance), instance=instance, created=True, update_fields=None, raw=False, using=alias
    )


def insert_many(instances: Sequence[Model]) -> None:
    """:func:`insert` of several new rows of one model in one INSERT ... VALUES (...), (...) per
    batch the backend allows (SQLite bounds a statement's parameters): each row's ``pre_save``
    goes out before the statement, its ``post_save`` after, in the rows' order. A receiver of
    one row's ``post_save`` therefore finds the later rows of the statement stored already.

    RETURNING gives the primary keys in the order of the VALUES, as the ORM's bulk_create relies
    on; a backend that cannot return them from a multi-row INSERT gets one :func:`insert` each."""
    if not instances:
        return
    model = type(instances[0])
    connection = connections[router.db_for_write(model, instance=instances[0])]
    if not connection.features.can_return_rows_from_bulk_insert:
        for instance in instances:
            insert(instance)
        return
    statement = _insert_statement(model, connection)
    # The compiled single-row statement, its VALUES repeated.
    head, _, tail = statement.sql.partition(" VALUES ")
    one_row, _, returning = tail.partition(" RETURNING ")
    size = max(connection.ops.bulk_batch_size(statement.fields, list(instances)), 1)
    for start in range(0, len(instances), size):
        batch = instances[start : start + size]
        params: list[Any] = []
        for instance in batch:
            assert type(instance) is model, "one model per statement"
            params.extend(_before_insert(instance, statement.fields, connection))
        sql = f"{head} VALUES {', '.join([one_row] * len(batch))} RETURNING {returning}"
        with transaction.mark_for_rollback_on_error(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(sql, params)
            pks = [pk for (pk,) in cursor.fetchall()]
        assert len(pks) == len(batch), "one primary key returned per row"
        for instance, pk in zip(batch, pks, strict=True):
            _stored(instance, pk, connection.alias)
        for instance in batch:
            _after_insert(instance, connection.alias)


def update(instance: Model) -> bool:
    """``instance.save()`` (its signals included) of a stored row, for a model with no parent, the
    UPDATE compiled once per model and database. False, sending no post_save, when the row was not
    there (deleted meanwhile): where ``save()`` would insert it again, the caller decides."""
    model = type(instance)
    connection = connections[router.db_for_write(model, instance=instance)]
    statement = _compiled(("update", model, connection.alias), lambda: _compile_update(model, connection))
    pre_save.send(sender=model, instance=instance, raw=False, using=connection.alias, update_fields=None)
    params = [
        field.get_db_prep_save(field.pre_save(instance, False), connection) for field in statement.fields
    ]
    params.append(instance.pk)
    with transaction.mark_for_rollback_on_error(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        updated = cursor.rowcount
    if updated != 1:
        return False
    instance._state.db = connection.alias
    post_save.send(
        sender=model, instance=instance, created=False, update_fields=None, raw=False, using=connection.alias
    )
    return True


def _compile_insert(model: type[Model], connection: BaseDatabaseWrapper) -> _Save:
    meta = model._meta
    _check_plain(model)
    quote = connection.ops.quote_name
    fields = [field for field in meta.concrete_fields if field is not meta.auto_field]
    return _Save(
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(str(field.column)) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {quote(str(meta.pk.column))}",
        fields,
    )


def _compile_update(model: type[Model], connection: BaseDatabaseWrapper) -> _Save:
    meta = model._meta
    _check_plain(model)
    quote = connection.ops.quote_name
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    return _Save(
        f"UPDATE {quote(meta.db_table)} SET {', '.join(f'{quote(str(field.column))} = %s' for field in fields)} "
        f"WHERE {quote(str(meta.pk.column))} = %s",
        fields,
    )


def _check_plain(model: type[Model]) -> None:
    # What the statements above leave out of Model.save(): parents' rows, values the database
    # computes (db_default, generated fields), primary keys the application chooses.
    meta = model._meta
    assert not meta.parents and meta.auto_field is not None, f"{model.__name__}: save() it instead"
    assert list(meta.db_returning_fields) == [meta.pk], f"{model.__name__}: save() it instead"


def claims_with_insert(key_model: type[Model], model: type[Model]) -> bool:
    """Whether :func:`claim_key_and_insert` can claim keys (rows of ``key_model``) and write
    ``model``'s rows in one statement: both on one database, a PostgreSQL one (only it has
    data-modifying ``WITH`` queries)."""
    alias = router.db_for_write(model)
    return alias == router.db_for_write(key_model) and connections[alias].vendor == "postgresql"


def claim_key_and_insert(
    key_model: type[Model], instance: Model, claim: KeyClaim, lock_timeout: float
) -> bool:
    """:func:`claim_or_count_key`, and :func:`insert` of ``instance`` whichever way the claim
    went, in one statement (both are data-modifying ``WITH`` queries) after the same SET LOCAL as
    the claim's; True when claimed here. For a row recorded as if its key were claimed (deferred
    mode's queued delivery): a duplicate then corrects it, and a new event, the common case, costs
    one round trip fewer. PostgreSQL only (see :func:`claims_with_insert`)."""
    model = type(instance)
    connection = connections[router.db_for_write(model, instance=instance)]
    sql, key_fields, fields = _compiled(
        ("claim+insert", key_model, model, connection.alias),
        lambda: _claim_inserting(key_model, model, connection),
    )
    params = _key_params(key_fields, connection, claim) + _before_insert(instance, fields, connection)
    deliveries, pk = _after_lock_timeout(connection, lock_timeout, sql, params)
    _stored(instance, pk, connection.alias)
    _after_insert(instance, connection.alias)
    return bool(deliveries == 1)


def _claim_inserting(
    key_model: type[Model], model: type[Model], connection: BaseDatabaseWrapper
) -> tuple[str, list[Field[Any, Any]], list[Field[Any, Any]]]:
    insert = _compile_insert(model, connection)
    # Data-modifying WITH queries all run, to completion, whatever the main query reads. The row
    # does not depend on the claim: it is inserted as it would be on its own, and a failure of
    # either fails the statement.
    sql = (
        f"WITH claim AS ({_claim_sql(key_model, connection)}), logged AS ({insert.sql}) "
        "SELECT claim.*, logged.* FROM claim, logged"
    )
    return sql, _fields(key_model), insert.fields


# The pairs of a Morph list (see morph_webhooks.resources.links), written from one JSON
# parameter: one statement whatever the list's length, compiled once.


def add_pairs(pairs: Sequence[tuple[Link, Sequence[tuple[str, str]]]]) -> None:
    """Insert, for each ``(link, refs)`` of ``pairs``, the (source ref, target ref) pairs ``refs``
    into ``link``'s table, those already there left as they are but for this side's mark, set.
    On PostgreSQL the inserts into several tables go in one statement (data-modifying ``WITH``
    queries), so that a new resource's lists cost it one round trip, however many it fills."""
    filled = [(link, refs) for link, refs in pairs if refs]
    if not filled:
        return
    connection = connections[router.db_for_write(filled[0][0].through)]
    together = connection.vendor == "postgresql"
    groups = [filled] if together else [[one] for one in filled]
    with transaction.mark_for_rollback_on_error(using=connection.alias), connection.cursor() as cursor:
        for group in groups:
            links = tuple(link for link, _ in group)
            sql = _compiled(("add pairs", links, connection.alias), partial(_together, links, connection))
            cursor.execute(sql, [json.dumps(refs) for _, refs in group])


def _together(links: tuple[Link, ...], connection: BaseDatabaseWrapper) -> str:
    inserts = [_add_pairs_sql(link, connection) for link in links]
    if len(inserts) == 1:
        return inserts[0]
    *first, last = inserts
    # Every WITH query runs to completion, whatever the main one reads.
    return "WITH " + ", ".join(f"p{index} AS ({sql})" for index, sql in enumerate(first)) + " " + last


def drop_pairs(link: Link, source_ref: str, kept: Sequence[str]) -> None:
    """Remove the pairs of ``source_ref`` whose target is not in ``kept``: this side's mark taken
    off those the other side lists, the others deleted."""
    connection = connections[router.db_for_write(link.through)]
    for sql in _compiled(("drop pairs", link, connection.alias), lambda: _drop_pairs_sql(link, connection)):
        with transaction.mark_for_rollback_on_error(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(sql, [source_ref, json.dumps(list(kept))])


def _pair_columns(link: Link, connection: BaseDatabaseWrapper) -> tuple[str, str, str]:
    meta = link.through._meta
    quote = connection.ops.quote_name
    source, target = (meta.get_field(name) for name in (link.source, link.target))
    assert isinstance(source, Field) and isinstance(target, Field), "the pairs' foreign keys"
    return quote(meta.db_table), quote(str(source.column)), quote(str(target.column))


def _add_pairs_sql(link: Link, connection: BaseDatabaseWrapper) -> str:
    table, source, target = _pair_columns(link, connection)
    quote = connection.ops.quote_name
    if connection.vendor == "postgresql":
        listed = "SELECT pair->>0, pair->>1{mark} FROM jsonb_array_elements(%s::jsonb) AS item(pair)"
    else:
        # WHERE true: SQLite reads ON CONFLICT after a bare FROM as a join's constraint.
        listed = "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'){mark} FROM json_each(%s) WHERE true"
    if link.listed_by is None:
        return f"INSERT INTO {table} ({source}, {target}) {listed.format(mark='')} ON CONFLICT DO NOTHING"
    mark, other = quote(link.listed_by), quote(str(link.listed_by_other))
    return (
        f"INSERT INTO {table} ({source}, {target}, {mark}, {other}) {listed.format(mark=', TRUE, FALSE')} "
        f"ON CONFLICT ({source}, {target}) DO UPDATE SET {mark} = TRUE"
    )


def _drop_pairs_sql(link: Link, connection: BaseDatabaseWrapper) -> list[str]:
    table, source, target = _pair_columns(link, connection)
    quote = connection.ops.quote_name
    if connection.vendor == "postgresql":
        kept = "SELECT jsonb_array_elements_text(%s::jsonb)"
    else:
        kept = "SELECT value FROM json_each(%s)"
    dropped = f"{source} = %s AND {target} NOT IN ({kept})"
    if link.listed_by is None:
        return [f"DELETE FROM {table} WHERE {dropped}"]
    mark, other = quote(link.listed_by), quote(str(link.listed_by_other))
    return [
        # Listed by this side only: gone. Listed by the other side too: no longer by this one.
        f"DELETE FROM {table} WHERE {dropped} AND NOT {other}",
        f"UPDATE {table} SET {mark} = FALSE WHERE {dropped} AND {mark}",
    ]
