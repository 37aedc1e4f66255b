"""Migration operations that leave a big table writable while they run.

On PostgreSQL, Django's ``AddIndex`` and ``AddConstraint`` build their index under a lock that
stops every INSERT and UPDATE of the table until the build ends: minutes on a request log or a
mirror of millions of rows, during which the endpoint answers nothing. These build it with
``CONCURRENTLY`` instead, which lets writes go on; PostgreSQL refuses it inside a transaction,
so a migration using them sets ``atomic = False``. Elsewhere (SQLite) they are the stock
operations.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def _postgresql(schema_editor: Any) -> bool:
    return bool(schema_editor.connection.vendor == "postgresql")


class AddIndexConcurrently(migrations.AddIndex):
    """``AddIndex``, built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if _postgresql(schema_editor):
            schema_editor.add_index(model, self.index, concurrently=True)
        else:
            schema_editor.add_index(model, self.index)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if _postgresql(schema_editor):
            schema_editor.remove_index(model, self.index, concurrently=True)
        else:
            schema_editor.remove_index(model, self.index)


class AddUniqueConstraintConcurrently(migrations.AddConstraint):
    """``AddConstraint`` of a plain ``UniqueConstraint`` (columns only: no condition, expression
    or option): on PostgreSQL its index is built with ``CREATE UNIQUE INDEX CONCURRENTLY``, then
    made the constraint (``ADD CONSTRAINT ... USING INDEX``), which takes a lock only for an
    instant."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if not _postgresql(schema_editor):
            schema_editor.add_constraint(model, self.constraint)
            return
        constraint = self.constraint
        assert not (constraint.condition or constraint.expressions or constraint.include), (
            "columns only: PostgreSQL makes only a plain unique index a constraint"
        )
        quote = schema_editor.quote_name
        columns = [model._meta.get_field(name).column for name in constraint.fields]
        table, name = quote(model._meta.db_table), quote(constraint.name)
        schema_editor.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} "
            f"({', '.join(quote(column) for column in columns)})"
        )
        schema_editor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}")


class CreateTrigramExtension(migrations.operations.base.Operation):
    """``CREATE EXTENSION IF NOT EXISTS pg_trgm`` on PostgreSQL, nothing elsewhere: what the
    trigram indexes of the admin's substring searches need. ``pg_trgm`` is a trusted extension
    (PostgreSQL 13 and later): the owner of the database may create it. When the migration's
    user may not, the error says what a database administrator must run."""

    reversible = True
    reduces_to_sql = False

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if not _postgresql(schema_editor):
            return
        from django.db import DatabaseError

        try:
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DatabaseError as exc:
            database = schema_editor.connection.settings_dict["NAME"]
            raise DatabaseError(
                f"The extension pg_trgm, which the admin's searches need, could not be created in "
                f"the database {database!r} ({exc}). Have a database administrator run "
                f'"CREATE EXTENSION pg_trgm;" in it, then run migrate again.'
            ) from exc

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        # Left in place: other applications of the database may use it.
        pass

    def describe(self) -> str:
        return "Creates the PostgreSQL extension pg_trgm"


class AddTrigramIndexConcurrently(migrations.operations.base.Operation):
    """On PostgreSQL, a trigram GIN index on ``UPPER(column::text)``, built ``CONCURRENTLY``:
    the expression Django's ``icontains`` compiles to (``UPPER("name"::text) LIKE UPPER(%s)``),
    so that the admin's substring search reads the index instead of every row. Nothing elsewhere.

    It lives in the database only, not in the models' state: a ``GinIndex`` in ``Meta.indexes``
    would be created on SQLite too, which has no GIN. Its name is its identity: the reverse
    drops it by name."""

    reversible = True
    reduces_to_sql = False

    def __init__(self, model_name: str, column: str, name: str) -> None:
        self.model_name, self.column, self.name = model_name, column, name

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (
            self.__class__.__qualname__,
            [],
            {"model_name": self.model_name, "column": self.column, "name": self.name},
        )

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass

    def create_sql(self, schema_editor: Any, model: Any) -> str:
        quote = schema_editor.quote_name
        return (
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote(self.name)} ON {quote(model._meta.db_table)} "
            f"USING gin ((UPPER({quote(self.column)}::text)) gin_trgm_ops)"
        )

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if _postgresql(schema_editor) and self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.execute(self.create_sql(schema_editor, model))

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if _postgresql(schema_editor) and self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(self.name)}")

    def describe(self) -> str:
        return f"Creates the trigram index {self.name} on {self.model_name}.{self.column} (PostgreSQL)"
