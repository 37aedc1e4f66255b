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
