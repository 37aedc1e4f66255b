"""How the admin's lists count their rows: exactly where that is cheap, from PostgreSQL's
statistics where it is not.

An exact ``COUNT(*)`` reads every row it counts: about a second for ten million deliveries, on
every page of the list, longer than the page itself. On PostgreSQL a list counts at most
ESTIMATE_ABOVE rows (``COUNT(*)`` over a ``LIMIT``: one statement, as before, whose cost is
bounded); past that, it says "about" and shows PostgreSQL's estimate: for the whole table, the
row count its statistics hold (``pg_class.reltuples``, kept by autovacuum); for a filtered or
searched list, the planner's estimate of the query's rows (``EXPLAIN``, which plans the query and
runs nothing). Other databases count exactly.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

# Counting this many rows takes a few milliseconds from an index; more is estimated.
ESTIMATE_ABOVE = 10_000


def estimated_rows(queryset: QuerySet[Any]) -> int | None:
    """PostgreSQL's estimate of the rows ``queryset`` returns; None on other databases or when
    there are no statistics (a table never analysed)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    query = queryset.query
    with connection.cursor() as cursor:
        if not query.where and not query.distinct and not query.combinator:
            # The whole table: its statistics' row count, without planning a query.
            cursor.execute(
                "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
                [connection.ops.quote_name(queryset.model._meta.db_table)],
            )
            row = cursor.fetchone()
            # -1: never analysed (PostgreSQL 14 and later); 0 may be an empty table or none.
            return int(row[0]) if row and row[0] > 0 else None
        sql, params = queryset.order_by().values("pk").query.get_compiler(queryset.db).as_sql()
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


if TYPE_CHECKING:
    BasePaginator = Paginator[Any]
else:
    BasePaginator = Paginator


class EstimatingPaginator(BasePaginator):
    """A Paginator whose count is PostgreSQL's estimate past ESTIMATE_ABOVE rows (``estimated``
    says so, for the list to say "about"), and exact below."""

    estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connections[queryset.db].vendor != "postgresql":
            return super().count
        # One row past the threshold tells whether there are more.
        capped = queryset.order_by().values("pk")[: ESTIMATE_ABOVE + 1].count()
        if capped <= ESTIMATE_ABOVE:
            return capped
        estimate = estimated_rows(queryset)
        if estimate is None:
            return super().count
        self.estimated = True
        # The planner may guess fewer rows than were just counted.
        return max(estimate, capped)
