"""Prometheus metrics: what the endpoint answered and how long applying events took, counted as it
happens; the queue and the connections, read from the database when scraped.

The only module that imports ``prometheus_client`` (the ``metrics`` extra). Without it, or with
``METRICS`` off, counting is a no-op and the ``metrics/`` view says what is missing.

Labels are bounded: an outcome is one of the statuses or error codes the endpoint answers, a model
one the app mirrors (else ""), a connector that of an authenticated event the policy let in (else
""); connections' labels come from the Connection rows. No idempotency key, Morph id or request
header becomes a label value.

Under several processes (gunicorn's workers, deferred mode's workers) prometheus-client's
multiprocess mode, turned on by ``PROMETHEUS_MULTIPROC_DIR``, has every process write its counts to
files in that directory; a scrape reads all of them, whichever process answers it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

from django.db.models import Count, Min, Q
from django.utils.timezone import now

from .conf import conf
from .extras import MissingDependency, install
from .health import silence_threshold
from .models import Connection, Outcome, WebhookDelivery
from .resources.registry import REGISTRY

if TYPE_CHECKING:
    from .events import MorphEvent

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError:  # the metrics extra is not installed
    INSTALLED = False
else:
    INSTALLED = True

INSTALL = install("metrics")
PREFIX = "morph_webhooks_"
# The text format every Prometheus version reads: prometheus-client's generate_latest writes it,
# and answers it to a scraper that asks for no other.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A sync started and not finished: running, or died before it could record how it ended.
SYNC_STARTED = "started"

if INSTALLED:
    # Not registered anywhere on creation: the metrics/ view serves them, and register() adds
    # them to a project's own registry.
    DELIVERIES = Counter(
        "morph_webhooks_deliveries",
        "Requests answered by the Morph webhook endpoint, by outcome (the status answered, or the "
        "error code of a 4xx or 5xx), mirrored model and connector.",
        ["outcome", "model", "connector"],
        registry=None,
    )
    PROCESSING = Histogram(
        "morph_webhooks_processing_seconds",
        "Time to apply one event, in the request (sync) or in a worker (deferred).",
        ["model", "mode"],
        registry=None,
    )


def unavailable_reason() -> str:
    """Why there are no metrics to serve, or "" when there are."""
    if not conf.METRICS:
        return f"Metrics are off: set MORPH_WEBHOOKS['METRICS'] = True (and {INSTALL})."
    if not INSTALLED:
        return f"Metrics need prometheus-client: {INSTALL}."
    return ""


def count_delivery(status_code: int, data: Any, event: MorphEvent | None) -> None:
    """Count one answered request: ``data`` is the JSON answered, ``event`` the event when the
    request held one that the policy let in (only its model and connector may become labels)."""
    if not INSTALLED or not conf.METRICS:
        return
    answered = (data.get("status") or data.get("error")) if isinstance(data, dict) else None
    outcome = answered if isinstance(answered, str) and answered else str(status_code)
    if event is None:
        DELIVERIES.labels(outcome, "", "").inc()
    else:
        DELIVERIES.labels(outcome, mirrored(event.model), event.connector_id).inc()


def observe_processing(event: MorphEvent, mode: str, seconds: float) -> None:
    if INSTALLED and conf.METRICS:
        PROCESSING.labels(mirrored(event.model), mode).observe(seconds)


def mirrored(model: str) -> str:
    # Any other model name is the sender's to choose.
    return model if model in REGISTRY else ""


def multiprocess_directory() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class DatabaseCollector:
    """The gauges read from the database at scrape time: two statements per scrape, whatever the
    size of the request log and however many connections (see :func:`database_metrics`)."""

    def collect(self) -> Iterator[Metric]:
        return database_metrics()

    def describe(self) -> Iterator[Metric]:
        # What a registry asks when this is registered: the names, without a query.
        return iter(database_families())


def database_families() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily("morph_webhooks_queued", "Deliveries queued for a worker."),
        GaugeMetricFamily(
            "morph_webhooks_oldest_queued_seconds",
            "Seconds since the oldest queued delivery was received (0 when none is queued).",
        ),
        GaugeMetricFamily(
            "morph_webhooks_dead",
            "Deliveries that workers gave up on, until they are reprocessed.",
        ),
        GaugeMetricFamily(
            "morph_webhooks_last_event_timestamp_seconds",
            "When the connection last sent a delivery (Unix time); connections never heard from are left out.",
            labels=["connector", "owner"],
        ),
        GaugeMetricFamily(
            "morph_webhooks_silence_threshold_seconds",
            "Seconds without events after which the health check finds the connection silent "
            "(SILENCE_THRESHOLD, SILENCE_OVERRIDES); connections never heard from or exempt (0) are left out.",
            labels=["connector", "owner"],
        ),
        GaugeMetricFamily(
            "morph_webhooks_last_sync_timestamp_seconds",
            "When the connection's last sync from Morph's API finished (Unix time), by its outcome; "
            f'"{SYNC_STARTED}": when the one not finished started. Connections never synced are left out.',
            labels=["connector", "owner", "outcome"],
        ),
    )


def database_metrics() -> Iterator[Metric]:
    queued, oldest, dead, last_events, thresholds, last_syncs = database_families()
    # One statement, answered by the (status, received_at) index: only queued and dead rows are read.
    queue = WebhookDelivery.objects.filter(status__in=(Outcome.QUEUED, Outcome.DEAD)).aggregate(
        # Counting a column of the index: PostgreSQL need not visit the table's rows.
        queued=Count("status", filter=Q(status=Outcome.QUEUED)),
        dead=Count("status", filter=Q(status=Outcome.DEAD)),
        oldest=Min("received_at", filter=Q(status=Outcome.QUEUED)),
    )
    queued.add_metric([], queue["queued"])
    oldest.add_metric([], 0 if queue["oldest"] is None else max((now() - queue["oldest"]).total_seconds(), 0))
    dead.add_metric([], queue["dead"])
    # One statement for every connection, the health check's (each connection's newest delivery
    # from the (connector_id, owner_id, received_at) index); no write per event anywhere.
    connections = Connection.objects.annotate(last_event_at=Connection.last_event()).values_list(
        "connector_id",
        "owner_id",
        "last_event_at",
        "last_sync_started_at",
        "last_sync_finished_at",
        "last_sync_outcome",
    )
    for connector, owner, last_event_at, started, finished, outcome in connections.order_by(
        "connector_id", "owner_id"
    ):
        if last_event_at is not None:
            last_events.add_metric([connector, owner], last_event_at.timestamp())
            # Alongside, so that an alert rule compares the two series and agrees with the health
            # check for every connection, overrides included.
            threshold = silence_threshold(connector, owner)
            if threshold > 0:
                thresholds.add_metric([connector, owner], threshold)
        if finished is not None:
            last_syncs.add_metric([connector, owner, outcome], finished.timestamp())
        elif started is not None:
            last_syncs.add_metric([connector, owner, SYNC_STARTED], started.timestamp())
    yield from (queued, oldest, dead, last_events, thresholds, last_syncs)


class OwnFiles:
    """Multiprocess mode: the app's counters and histogram summed over every process's files in
    PROMETHEUS_MULTIPROC_DIR, without whatever else the project counts there."""

    def __init__(self, directory: str) -> None:
        self.files = MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        every = self.files.collect()  # type: ignore[no-untyped-call]
        return (metric for metric in every if metric.name.startswith(PREFIX))


class Scrape:
    """Everything the metrics/ view serves."""

    def collect(self) -> Iterator[Metric]:
        directory = multiprocess_directory()
        counted: Iterable[Metric] = (
            OwnFiles(directory).collect() if directory else [*DELIVERIES.collect(), *PROCESSING.collect()]
        )
        yield from counted
        yield from database_metrics()


def exposition() -> tuple[bytes, str]:
    """The metrics and their content type, in Prometheus' text format."""
    return generate_latest(Scrape()), CONTENT_TYPE


_REGISTRIES: WeakSet[CollectorRegistry] = WeakSet()


def register(registry: CollectorRegistry) -> None:
    """Add the app's metrics to a registry the project already exposes (``prometheus_client.REGISTRY``
    for django-prometheus), once however often it is called. In multiprocess mode only the
    database's gauges are added: the counters and histogram reach any exporter that reads
    PROMETHEUS_MULTIPROC_DIR from their files, and adding them again would count them twice."""
    if not INSTALLED:
        raise MissingDependency("morph_webhooks.metrics.register", "prometheus-client", "metrics")
    if registry in _REGISTRIES:
        return
    if multiprocess_directory() is None:
        registry.register(DELIVERIES)
        registry.register(PROCESSING)
    registry.register(DatabaseCollector())
    _REGISTRIES.add(registry)
