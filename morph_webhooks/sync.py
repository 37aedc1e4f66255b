"""Converging the local copy of a connection's resources with Morph's REST API (morph_webhooks_sync).

Morph's API has no "updated since" filter: a sync scans every resource of each model, one page at
a time, and stores each page through :func:`~.store.store_page`, by the rules a webhook's
event follows (those of :func:`~.store.store_resource`): an older or equal version changes
nothing (a webhook that arrived meanwhile wins), a newer one updates, an unknown one creates;
signals go out as for webhooks, with an event whose ``source`` is "sync". No idempotency key is consumed and no request is logged per resource: the
run is recorded once, on its :class:`~.models.Connection`.

Each page is applied in one transaction together with the cursor of the next, so an interrupted
sync resumes after the last page applied. Nothing outlives its page: what ``delete_missing`` needs
to know of a whole scan (which rows it returned) is marked on the rows themselves (``synced_at``),
which also lets a scan resumed across runs prove it is complete.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import OperationalError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .api import CursorLoop, ListRefused, MorphAPI, MorphAPIError, Page
from .errors import ConcurrentDeliveryError
from .events import InvalidEvent, ResourceEvent
from .models import Connection, MirroredResource, SyncOutcome
from .parsing import expanded_keys, lookup_id, parse_resource
from .resources.base import ResourceSpec
from .resources.registry import REGISTRY
from .store import (
    ATTEMPTS,
    STORED_STATE,
    Collision,
    Key,
    deadlocked,
    in_lock_order,
    lock_in_order,
    preview_resource,
    store_page,
    store_resource,
)

OUTCOMES = ("created", "updated", "unchanged", "stale", "deleted", "failed")
# Invalid resources named in a model's report; any further ones are only counted.
NAMED_FAILURES = 20
# What Morph may answer a cursor it no longer accepts (expired, or from another API version).
REFUSED_CURSOR = frozenset({400, 404, 410, 422})
# Rows soft-deleted per transaction by delete_missing.
DELETE_BATCH = 500


@dataclass
class ModelSync:
    """What a sync did with one model of one connection."""

    model: str
    counts: Counter[str] = field(default_factory=Counter)
    pages: int = 0
    resumed: bool = False
    # Every page was read and applied, from the scan's first to its last.
    complete: bool = False
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Why Morph would not list the model for the connection ("" when it did).
    refused: str = ""

    @property
    def resources(self) -> int:
        return sum(self.counts[outcome] for outcome in OUTCOMES if outcome != "deleted")

    def summary(self) -> str:
        counts = ", ".join(f"{self.counts[outcome]} {outcome}" for outcome in OUTCOMES)
        if self.refused:
            return f"{self.model}: not synced: {self.refused}"
        state = "" if self.complete else " (incomplete)"
        pages = f"{self.pages} page{'' if self.pages == 1 else 's'}"
        return f"{self.model}: {pages}, {self.resources} resources{state}: {counts}"


@dataclass
class SyncReport:
    connection: Connection
    dry_run: bool = False
    models: list[ModelSync] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(model.complete and not model.counts["failed"] for model in self.models)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            model.model: {outcome: model.counts[outcome] for outcome in OUTCOMES} for model in self.models
        }

    def problem(self) -> str:
        """Why the sync did not succeed, in a sentence naming the connection."""
        if self.error:
            return self.error
        refused = [model.refused for model in self.models if model.refused]
        failed = [
            f"{model.model} ({model.counts['failed']})" for model in self.models if model.counts["failed"]
        ]
        if refused and not failed:
            return " ".join(refused)
        return " ".join(
            [*refused, f"Invalid resources for {self.connection}, not stored: {', '.join(failed)}."]
        )


def _is_stored_version(spec: ResourceSpec, resource: dict[str, Any], row: MirroredResource) -> bool:
    """Whether ``resource`` is, by its model and ``updatedAt``, the version ``row`` holds, and
    expands no related resource: storing it would then change nothing and send nothing
    (``storing_outcome``: "unchanged"), so it is not validated again. The version was valid when
    it was stored; a resource that changed in Morph has a new ``updatedAt``, and is validated. A
    row deleted by a sync for missing from its scan is not: listed again, it is restored."""
    fields, updated_at = resource.get("fields"), resource.get("updatedAt")
    if (
        resource.get("model") != spec.morph_model
        or not isinstance(fields, dict)
        or not isinstance(updated_at, str)
    ):
        return False
    # An expanded resource is stored by its own version, whatever its parent's: the full path.
    if any(
        isinstance(item, dict) and item.get("object") == "resource"
        for value in fields.values()
        for item in (value if isinstance(value, list) else [value])
    ):
        return False
    try:
        version = parse_datetime(updated_at)  # as the serializers read it
    except ValueError:
        return False
    return (
        version is not None
        and version.tzinfo is not None
        and version == row.remote_updated_at
        and not row.deleted_by_sync
    )


class SyncFailed(Exception):
    """A sync run by a task failed (recorded on its connection first); the message says why."""


class SyncRunning(Exception):
    """Another sync of the connection holds its lease: two syncs of one connection never run at
    once (two cron runs overlapping, "Sync now" during the cron's run)."""

    def __init__(self, connection: Connection) -> None:
        since, until = connection.last_sync_started_at, connection.sync_lease_until
        super().__init__(
            f"A sync of {connection} is already running"
            + (f", since {since:%Y-%m-%d %H:%M:%S} UTC" if since else "")
            + ": not starting another."
            + (
                f" Should it have died, the connection is free again at {until:%H:%M:%S} UTC "
                "(SYNC_LEASE_SECONDS after its last page)."
                if until
                else ""
            )
        )
        self.connection = connection


def models_to_sync(names: Iterable[str] = ()) -> list[ResourceSpec]:
    """The specs of ``names`` (all when empty), in the registry's order: related models first, so
    that the names an opportunity refers to resolve."""
    wanted = set(names)
    return [spec for name, spec in REGISTRY.items() if not wanted or name in wanted]


def sync_connection(
    connection: Connection,
    specs: Sequence[ResourceSpec],
    *,
    delete_missing: bool = False,
    dry_run: bool = False,
    progress: Callable[[ModelSync], None] | None = None,
    on_page: Callable[[ModelSync], None] | None = None,
) -> SyncReport:
    """Sync ``connection``'s resources of each of ``specs`` from Morph's API. A failure of the API
    (after retries) stops the connection and is reported; anything else (the database, a signal
    receiver, Ctrl-C) is recorded on the connection and raised. A dry run writes nothing.

    ``progress`` is called with each model's report once its scan ends (or fails), ``on_page``
    after each page applied."""
    report = SyncReport(connection, dry_run=dry_run)
    if not dry_run and not connection.claim_sync():
        raise SyncRunning(connection)
    try:
        with MorphAPI(connection.connector_id, connection.owner_id) as api:
            for spec in specs:
                model = ModelSync(spec.morph_model)
                report.models.append(model)
                try:
                    _ModelScan(connection, spec, api, model, dry_run=dry_run, on_page=on_page).run(
                        delete_missing
                    )
                except ListRefused as exc:
                    # That model only: the others are listed, and the sync ends incomplete.
                    model.refused = str(exc)
                finally:
                    # What was applied before a failure is shown too.
                    if progress is not None:
                        progress(model)
    except MorphAPIError as exc:
        report.error = str(exc)
    except BaseException as exc:
        if not dry_run:
            if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (named)
                error = f"Interrupted ({exc})." if str(exc) else "Interrupted."
            else:
                error = f"{type(exc).__name__}: {exc}"
            connection.finish_sync(SyncOutcome.FAILED, report.counts(), error)
        raise
    if not dry_run:
        outcome = SyncOutcome.SUCCEEDED if report.ok else SyncOutcome.FAILED
        connection.finish_sync(outcome, report.counts(), "" if report.ok else report.problem())
    return report


class _ModelScan:
    """One scan of one model for one connection, resumed from a saved cursor when a sync left one."""

    def __init__(
        self,
        connection: Connection,
        spec: ResourceSpec,
        api: MorphAPI,
        report: ModelSync,
        *,
        dry_run: bool,
        on_page: Callable[[ModelSync], None] | None = None,
    ) -> None:
        self.connection = connection
        self.spec = spec
        self.api = api
        self.report = report
        self.dry_run = dry_run
        self.on_page = on_page
        self.rows = spec.model._default_manager.filter(
            connector_id=connection.connector_id, owner_id=connection.owner_id
        )
        # A dry run starts over: it saves no cursor and previews what a full scan would do.
        resume_point = None if dry_run else connection.resume_point(spec.morph_model)
        self.cursor: str | None = None
        self.started_at = timezone.now()
        if resume_point is not None:
            self.cursor, self.started_at = resume_point
            report.resumed = True
            report.notes.append(f"resumed the scan started at {self.started_at:%Y-%m-%d %H:%M:%S} UTC")
        # Dry run: local rows the scan returned, counted page by page, for the deletions preview.
        self.seen_candidates = 0

    def run(self, delete_missing: bool) -> None:
        try:
            for page in self.api.pages(self.spec.morph_model, self.cursor):
                self.apply(page)
                self.report.pages += 1
                if self.on_page is not None:
                    self.on_page(self.report)
        except CursorLoop as exc:
            if not self.dry_run:
                # Resuming from a cursor of the loop would only go round it again.
                self.connection.save_cursor(self.spec.morph_model, None, self.started_at)
            raise CursorLoop(f"{exc} The next sync starts {self.spec.morph_model} over.") from None
        except ListRefused:
            raise  # whatever the cursor: the model cannot be listed at all
        except MorphAPIError as exc:
            if self.report.resumed and self.report.pages == 0 and exc.status in REFUSED_CURSOR:
                # A saved cursor Morph no longer accepts would otherwise fail every run from now on.
                self.connection.save_cursor(self.spec.morph_model, None, self.started_at)
                raise MorphAPIError(
                    f"{exc} The scan could not be resumed from its saved cursor: the next sync starts "
                    f"{self.spec.morph_model} over.",
                    exc.status,
                ) from None
            raise
        self.report.complete = True
        if not delete_missing:
            return
        if self.report.counts["failed"]:
            self.report.notes.append(
                "nothing deleted: some resources were invalid, so the scan is not trusted"
            )
        elif self.dry_run:
            would_delete = max(self.missing().count() - self.seen_candidates, 0)
            self.report.notes.append(f"would delete about {would_delete}")
        else:
            self.delete_missing()

    def apply(self, page: Page) -> None:
        ids = [
            resource["id"]
            for resource in page.resources
            if isinstance(resource, dict) and lookup_id(resource.get("id")) is not None
        ]
        if self.dry_run:
            events, failed = self.parse(page.resources)
            counts = self.preview(events, ids)
        else:
            counts, failed = self.store(page.resources, ids, page.next_cursor)
        self.report.counts.update(counts)
        self.report.counts["failed"] += len(failed)
        room = NAMED_FAILURES - len(self.report.failures)
        self.report.failures.extend(failed[: max(room, 0)])

    def parse(self, resources: Iterable[Any]) -> tuple[list[ResourceEvent], list[str]]:
        """The events of ``resources``, and a description of each invalid one."""
        events: list[ResourceEvent] = []
        failed: list[str] = []
        for resource in resources:
            try:
                events.append(
                    parse_resource(
                        self.spec, resource, self.connection.connector_id, self.connection.owner_id
                    )
                )
            except InvalidEvent as exc:
                failed.append(self.describe_failure(resource, exc.errors))
        return events, failed

    def describe_failure(self, resource: Any, errors: dict[str, list[str]]) -> str:
        remote_id = resource.get("id") if isinstance(resource, dict) else None
        problems = "; ".join(f"{path}: {' '.join(messages)}" for path, messages in errors.items())
        return f"{self.spec.morph_model} {remote_id!r}: {problems}"

    def store(
        self, resources: list[Any], ids: list[str], next_cursor: str | None
    ) -> tuple[Counter[str], list[str]]:
        """Apply the page's resources, mark its rows seen and save the next cursor, all at once.
        Returns the outcomes and a description of each invalid resource."""
        expanded = {key for resource in resources for key in expanded_keys(self.spec, resource)}
        for _ in range(ATTEMPTS):
            counts: Counter[str] = Counter()
            try:
                with transaction.atomic():
                    stored = self.lock(ids, expanded)
                    # The versions already stored are not parsed (most of a re-sync's cost); an id
                    # listed twice in the page takes the full path, as its copies are ordered.
                    listed = Counter(ids)
                    changed = [
                        resource
                        for resource in resources
                        if not (
                            isinstance(resource, dict)
                            and isinstance(resource.get("id"), str)
                            and resource["id"] in stored
                            and listed[resource["id"]] == 1
                            and _is_stored_version(self.spec, resource, stored[resource["id"]])
                        )
                    ]
                    counts["unchanged"] = len(resources) - len(changed)
                    events, failed = self.parse(changed)
                    now = timezone.now()
                    counts.update(store_page(events, stored, synced_at=now))
                    # The rows the page inserted were marked seen as they were written.
                    if stored:
                        self.rows.filter(remote_id__in=list(stored)).update(synced_at=now)
                    self.connection.save_cursor(self.spec.morph_model, next_cursor, self.started_at)
            except Collision:
                continue  # a webhook created one of the rows first: the next attempt sees it
            except OperationalError as exc:
                if not deadlocked(exc):
                    raise
                continue
            return counts, failed
        raise ConcurrentDeliveryError(
            f"gave up on a page after {ATTEMPTS} collisions or deadlocks with concurrent events"
        )

    def lock(self, ids: list[str], expanded: set[Key]) -> dict[str, MirroredResource]:
        """The page's stored versions by id, in one query, locked for the page's transaction with
        the rows of what its resources expand (``expanded``), in :func:`lock_in_order`'s order.
        What is unchanged costs nothing more, what is new is known without a query per resource
        (store_page inserts it; a webhook creating one of those rows meanwhile makes the page
        collide and start over), and the stored versions cannot change under the page."""
        model = self.spec.morph_model
        connector_id, owner_id = self.connection.connector_id, self.connection.owner_id
        lock_in_order(connector_id, owner_id, (key for key in expanded if key[0] < model))
        same_model = [remote_id for key_model, remote_id in expanded if key_model == model]
        rows = in_lock_order(self.rows.select_for_update().filter(remote_id__in=[*ids, *same_model]))
        listed = set(ids)
        stored = {
            row.remote_id: row for row in rows.only("remote_id", *STORED_STATE) if row.remote_id in listed
        }
        lock_in_order(connector_id, owner_id, (key for key in expanded if key[0] > model))
        return stored

    def preview(self, events: list[ResourceEvent], ids: list[str]) -> Counter[str]:
        self.seen_candidates += self.missing().filter(remote_id__in=ids).count()
        return Counter(preview_resource(event) for event in events)

    def missing(self) -> Any:
        """The live rows a complete scan did not return, except rows written here since the scan
        started. A dry run marks nothing: its rows are the candidates, the seen ones counted apart."""
        rows = self.rows.filter(deleted_at__isnull=True, updated_at__lt=self.started_at)
        if not self.dry_run:
            rows = rows.filter(Q(synced_at__isnull=True) | Q(synced_at__lt=self.started_at))
        return rows

    def delete_missing(self) -> None:
        """Soft-delete what the scan did not return, through store_resource (``*_deleted`` goes out),
        a batch per transaction; each row is locked and checked again first, so a webhook that
        wrote it meanwhile keeps it."""
        last_pk = 0
        while True:
            batch = list(
                self.missing()
                .filter(pk__gt=last_pk)
                .order_by("pk")
                .values_list("pk", flat=True)[:DELETE_BATCH]
            )
            if not batch:
                return
            last_pk = batch[-1]
            with transaction.atomic():
                self.connection.renew_sync_lease()
                for row in in_lock_order(self.missing().select_for_update().filter(pk__in=batch)):
                    if store_resource(self.deletion(row)) == "updated":
                        self.report.counts["deleted"] += 1

    def deletion(self, row: MirroredResource) -> ResourceEvent:
        """The event of a sync that found ``row`` gone from Morph: a delete at its own version."""
        return ResourceEvent(
            spec=self.spec,
            model=self.spec.morph_model,
            action="deleted",
            connector_id=row.connector_id,
            owner_id=row.owner_id,
            idempotency_key="",
            remote_id=row.remote_id,
            payload={},
            remote_created_at=row.remote_created_at,
            remote_updated_at=row.remote_updated_at,
            changes={},
            source="sync",
        )
