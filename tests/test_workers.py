"""Deferred mode with real worker processes on PostgreSQL: django-tasks-db's ``db_worker``, RQ's
worker on Redis, and the app's own ``morph_webhooks_worker`` (QUEUE = "deliveries"). The endpoint
runs in the test process; workers are separate processes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from morph_webhooks.models import Connection, IdempotencyKey, Opportunity, WebhookDelivery
from morph_webhooks.sweeper import sweep
from morph_webhooks.testing import opportunity_event
from morph_webhooks.testing.fake_api import FakeMorphAPI
from tests.helpers import postgresql_only

pytestmark = [
    pytest.mark.django_db(transaction=True),
    postgresql_only,
]

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"db": "django_tasks_db.DatabaseBackend", "rq": "django_tasks_rq.RQBackend"}
# "deliveries": no task backend; morph_webhooks_worker reads the queued deliveries.
QUEUES = [*BACKENDS, "deliveries"]


def redis_url() -> str:
    # The queue's Redis, which worker processes read from the same settings (REDIS_URL).
    return str(django_settings.RQ_QUEUES["default"]["URL"])


def redis_is_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(redis_url()).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=QUEUES)
def backend(request, settings) -> Iterator[str]:
    if request.param == "rq":
        if not redis_is_up():
            pytest.skip("needs Redis on 127.0.0.1:6379")
        import redis

        redis.Redis.from_url(redis_url()).flushdb()
    queue = "deliveries" if request.param == "deliveries" else "tasks"
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": queue}
    settings.TASKS = {"default": {"BACKEND": BACKENDS.get(request.param, BACKENDS["db"])}}
    yield request.param


@pytest.fixture
def signal_file(tmp_path: Path) -> Path:
    path = tmp_path / "signals.txt"
    path.touch()
    return path


def worker_env(backend: str, **extra: str) -> dict[str, str]:
    database = connection.settings_dict
    url = f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": url,
        "MORPH_WEBHOOKS_PROCESSING": "deferred",
        "MORPH_WEBHOOKS_QUEUE": "deliveries" if backend == "deliveries" else "tasks",
        "MORPH_WEBHOOKS_TASK_BACKEND": BACKENDS.get(backend, BACKENDS["db"]),
        **extra,
    }


def worker_command(backend: str, burst: bool = True) -> list[str]:
    if backend == "deliveries":
        return [
            sys.executable,
            "-m",
            "django",
            "morph_webhooks_worker",
            *(["--batch"] if burst else []),
            "--interval",
            "0.1",
        ]
    if backend == "db":
        return [
            sys.executable,
            "-m",
            "django",
            "db_worker",
            "--batch",
            "--no-startup-delay",
            "--interval",
            "0.1",
        ]
    # RQ must run jobs with the backend's Job class, which knows how to call a Task, and its
    # scheduler, which enqueues retries when they fall due: the command docs/guides/deferred.md gives.
    return [
        sys.executable,
        "-m",
        "django",
        "rqworker",
        "default",
        *(["--burst"] if burst else []),
        "--with-scheduler",
        "--job-class",
        "django_tasks_rq.backend.Job",
    ]


def run_worker(backend: str, **env: str) -> None:
    """Run a worker until the queue is empty; it must exit cleanly."""
    completed = subprocess.run(
        worker_command(backend),
        env=worker_env(backend, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_queued_then_processed_by_a_worker_process(send, backend, signal_file):
    answers = [send(opportunity_event("created", f"opp_{i}"), key=f"k{i}").json() for i in range(5)]
    answers.append(send(opportunity_event("created", "opp_0"), key="k0").json())

    assert answers == [{"status": "queued"}] * 5 + [{"status": "duplicate"}]
    assert Opportunity.objects.count() == 0

    run_worker(backend, MORPH_TEST_SIGNAL_FILE=str(signal_file))

    assert Opportunity.objects.count() == 5
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"processed", "duplicate"}
    assert set(IdempotencyKey.objects.values_list("outcome", flat=True)) == {"processed"}
    assert sorted(signal_file.read_text().splitlines()) == [f"created k{i}" for i in range(5)]


def test_worker_killed_mid_task_is_processed_later_once(send, backend, signal_file, tmp_path):
    stall = tmp_path / "stalled.pid"
    send(opportunity_event(), key="k1")
    env = {"MORPH_TEST_SIGNAL_FILE": str(signal_file), "MORPH_TEST_STALL_FILE": str(stall)}
    # morph_webhooks_worker's lease on what it claimed: short, so that the test need not wait.
    lease = 1.0
    env["MORPH_WEBHOOKS_PENDING_TIMEOUT"] = str(lease)
    worker = subprocess.Popen(
        worker_command(backend),
        env=worker_env(backend, **env),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(stall.exists)
        # Kill the process inside the transaction (for RQ, the work horse that runs the job).
        os.kill(int(stall.read_text()), signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "queued"
    assert Opportunity.objects.count() == 0
    assert signal_file.read_text() == ""

    if backend == "deliveries":
        # No sweeper: the dead worker's lease runs out, and the delivery is due again.
        assert delivery.next_attempt_at > timezone.now()
        time.sleep(lease)
    else:
        assert sweep(older_than=0) == 1
    run_worker(backend, **env)

    delivery.refresh_from_db()
    assert delivery.status == "processed"
    assert Opportunity.objects.count() == 1
    assert signal_file.read_text().splitlines() == ["created k1"]


def test_retries_with_backoff_end_in_dead(send, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred"}
    settings.TASKS = {"default": {"BACKEND": BACKENDS["db"]}}
    send(opportunity_event(), key="k1")
    env = {"MORPH_TEST_FAIL": "1", "MORPH_WEBHOOKS_MAX_ATTEMPTS": "3", "MORPH_WEBHOOKS_RETRY_DELAY": "0.2"}
    seen = []
    deadline = time.monotonic() + 60
    # A batch worker leaves when nothing is due; each retry falls due after its backoff.
    while (delivery := WebhookDelivery.objects.get()).status != "dead":
        seen.append((delivery.status, delivery.attempts))
        assert time.monotonic() < deadline, seen
        run_worker("db", **env)
        time.sleep(0.3)

    assert (delivery.attempts, delivery.next_attempt_at) == (3, None)
    assert "receiver failure requested by the test" in delivery.error
    assert Opportunity.objects.count() == 0
    assert ("queued", 1) in seen and ("queued", 2) in seen


def test_rq_worker_runs_a_retry_when_it_falls_due(send, settings, tmp_path, signal_file):
    if not redis_is_up():
        pytest.skip("needs Redis on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(redis_url()).flushdb()
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred"}
    settings.TASKS = {"default": {"BACKEND": BACKENDS["rq"]}}
    env = {
        "MORPH_TEST_SIGNAL_FILE": str(signal_file),
        "MORPH_TEST_FAIL_ONCE_FILE": str(tmp_path / "failed-once"),
        "MORPH_WEBHOOKS_RETRY_DELAY": "0.5",
    }
    worker = subprocess.Popen(
        worker_command("rq", burst=False),
        env=worker_env("rq", **env),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert send(opportunity_event(), key="k1").json() == {"status": "queued"}
        # The sweeper would enqueue it again only PENDING_TIMEOUT (600 s) late: the worker's
        # scheduler must run the retry within seconds of it falling due.
        wait_for(lambda: WebhookDelivery.objects.get().status != "queued", timeout=20)
    finally:
        worker.terminate()
        worker.wait(30)

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("processed", 2)
    assert Opportunity.objects.count() == 1
    assert signal_file.read_text().splitlines() == ["created k1"]


@pytest.mark.parametrize("backend", list(BACKENDS), indirect=True)
def test_all_enqueue_is_synced_by_worker_processes(backend, settings):
    Connection.objects.create(connector_id="hubspot", owner_id="tenant_1")
    Connection.objects.create(connector_id="pipedrive", owner_id="tenant_2")
    with FakeMorphAPI() as api:
        api.add("hubspot", "tenant_1", "crmOpportunity", [opportunity_event(remote_id="opp_1")["data"]])
        api.add(
            "pipedrive",
            "tenant_2",
            "crmOpportunity",
            [opportunity_event(remote_id=f"opp_{n}")["data"] for n in range(3)],
        )
        credentials = {"API_URL": api.url, "API_KEY": api.key, "API_SECRET": api.secret}
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, **credentials}

        call_command("morph_webhooks_sync", "--all", "--enqueue", stdout=io.StringIO())
        assert Opportunity.objects.count() == 0  # queued, not run here

        run_worker(backend, **{f"MORPH_WEBHOOKS_{name}": value for name, value in credentials.items()})

    assert sorted(Opportunity.objects.values_list("connector_id", "remote_id")) == [
        ("hubspot", "opp_1"),
        ("pipedrive", "opp_0"),
        ("pipedrive", "opp_1"),
        ("pipedrive", "opp_2"),
    ]
    assert set(Connection.objects.values_list("last_sync_outcome", flat=True)) == {"succeeded"}


def test_a_failed_sync_is_a_failed_task_for_the_worker(settings):
    settings.TASKS = {"default": {"BACKEND": BACKENDS["db"]}}
    from django_tasks_db.models import DBTaskResult

    Connection.objects.create(connector_id="hubspot", owner_id="tenant_1")
    Connection.objects.create(connector_id="pipedrive", owner_id="tenant_2")
    with FakeMorphAPI() as api:
        api.add("pipedrive", "tenant_2", "crmOpportunity", [opportunity_event(remote_id="opp_1")["data"]])
        invalid = opportunity_event(remote_id="opp_bad")["data"]
        invalid["fields"]["amount"] = -1
        api.add("hubspot", "tenant_1", "crmOpportunity", [invalid])
        credentials = {"API_URL": api.url, "API_KEY": api.key, "API_SECRET": api.secret}
        settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, **credentials}
        call_command(
            "morph_webhooks_sync", "--all", "--enqueue", "--model", "crmOpportunity", stdout=io.StringIO()
        )

        run_worker("db", **{f"MORPH_WEBHOOKS_{name}": value for name, value in credentials.items()})

    tasks = {task.args_kwargs["args"][0]: task for task in DBTaskResult.objects.all()}
    hubspot, pipedrive = Connection.objects.order_by("connector_id")
    assert (tasks[hubspot.pk].status, tasks[pipedrive.pk].status) == ("FAILED", "SUCCESSFUL")
    assert tasks[hubspot.pk].exception_class_path == "morph_webhooks.sync.SyncFailed"
    assert "Invalid resources for hubspot / tenant_1" in tasks[hubspot.pk].traceback
    assert (hubspot.last_sync_outcome, pipedrive.last_sync_outcome) == ("failed", "succeeded")


def test_own_workers_share_a_backlog_and_apply_each_delivery_once(send, settings, signal_file, tmp_path):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
    # 40 opportunities, each created then updated twice, the updates sent before the create for
    # half of them: concurrent workers must still leave every row at its newest version. Sent one
    # version of each at a time, so that the workers' first three deliveries (held at the gate
    # below, transactions open) are of three opportunities: two of one would wait on its row.
    by_opportunity = []
    for n in range(40):
        versions = [opportunity_event("created", f"opp_{n}", fields={"name": f"v0 {n}"})]
        for minute in (1, 2):
            versions.append(
                opportunity_event(
                    "updated",
                    f"opp_{n}",
                    updated_at=f"2025-03-06T09:{15 + minute}:04.596Z",
                    fields={"name": f"v{minute} {n}"},
                )
            )
        if n % 2:
            versions.reverse()
        by_opportunity.append(versions)
    keys = []
    for versions in zip(*by_opportunity, strict=True):
        for version in versions:
            keys.append(f"k{len(keys)}")
            assert send(version, key=keys[-1]).json() == {"status": "queued"}

    # Each worker's first event waits until all three hold one; then each takes 20 ms or more, so
    # that they overlap.
    gate = tmp_path / "gate"
    gate.mkdir()
    env = worker_env(
        "deliveries",
        MORPH_TEST_SIGNAL_FILE=str(signal_file),
        MORPH_TEST_SLOW="0.02",
        MORPH_TEST_GATE_DIR=str(gate),
    )
    workers = [
        subprocess.Popen(
            worker_command("deliveries"),
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 60
    while len(list(gate.iterdir())) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    waiting = len(list(gate.iterdir()))
    (gate / "open").touch()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    assert waiting == 3, "the workers did not each hold a delivery at once"

    # Every delivery claimed and applied once, by one worker: none attempted twice.
    applied = [int(out.split()[1]) for out, _ in outputs]
    assert sum(applied) == len(keys)
    assert all(applied), f"a worker applied nothing: {applied}"
    deliveries = WebhookDelivery.objects.all()
    assert set(deliveries.values_list("attempts", flat=True)) == {1}
    assert set(deliveries.values_list("status", flat=True)) <= {"processed", "stale"}
    assert sorted(Opportunity.objects.values_list("name", flat=True)) == sorted(f"v2 {n}" for n in range(40))
    assert not IdempotencyKey.objects.filter(outcome="queued").exists()
    # A line per signal sent, each key at most once.
    lines = signal_file.read_text().splitlines()
    assert len({line.split()[1] for line in lines}) == len(lines)


def test_a_delivery_that_kills_its_worker_ends_dead_and_holds_no_other(send, settings, signal_file):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
    # opp_0 has waited longest: a worker takes it first, and its receiver SIGKILLs the worker.
    for n in range(5):
        assert send(opportunity_event("created", f"opp_{n}"), key=f"k{n}").json() == {"status": "queued"}
    env = worker_env(
        "deliveries",
        MORPH_TEST_KILL="opp_0",
        MORPH_TEST_SIGNAL_FILE=str(signal_file),
        MORPH_WEBHOOKS_MAX_ATTEMPTS="3",
    )

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            worker_command("deliveries"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    assert run().returncode == -signal.SIGKILL
    killer = WebhookDelivery.objects.get(idempotency_key="k0")
    # The attempt it died in is counted: it was recorded before anything was applied.
    assert (killer.status, killer.attempts) == ("queued", 1)
    # The others were not claimed with it: the next worker applies them now, not a lease later.
    others = WebhookDelivery.objects.exclude(pk=killer.pk)
    assert set(others.values_list("status", "attempts")) == {("queued", 0)}
    second = run()
    assert (second.returncode, second.stdout) == (0, "Applied 4 deliveries.\n"), second.stderr[-2000:]
    assert set(others.values_list("status", "attempts")) == {("processed", 1)}

    # Each time its lease runs out (moved to now here, not waited for), a worker takes it again.
    runs = []
    for _ in range(3):
        WebhookDelivery.objects.filter(pk=killer.pk).update(next_attempt_at=timezone.now())
        runs.append(run())
    assert [run.returncode for run in runs] == [-signal.SIGKILL, -signal.SIGKILL, 0]
    # Killed in all three of its attempts (MAX_ATTEMPTS): dead, and the receivers told.
    assert runs[-1].stdout == "Applied 0 deliveries; 1 failed (recorded, and retried or dead).\n"
    killer.refresh_from_db()
    assert (killer.status, killer.attempts, killer.next_attempt_at) == ("dead", 3, None)
    assert "WorkerDied: Gave up after 3 attempts (MAX_ATTEMPTS)" in killer.error
    assert sorted(signal_file.read_text().splitlines()) == [
        *(f"created k{n}" for n in range(1, 5)),
        "delivery_failed k0",
    ]
    assert not Opportunity.objects.filter(remote_id="opp_0").exists()
    assert IdempotencyKey.objects.get(key="k0").outcome == "queued"  # held for a reprocess


def test_own_worker_stops_gracefully_on_sigterm(send, settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
    worker = subprocess.Popen(
        worker_command("deliveries", burst=False),
        env=worker_env("deliveries"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # It keeps polling: deliveries sent while it runs are applied within its interval.
        for n in range(3):
            send(opportunity_event("created", f"opp_{n}"), key=f"k{n}")
            wait_for(lambda n=n: Opportunity.objects.filter(remote_id=f"opp_{n}").exists(), timeout=20)
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=10)
    finally:
        worker.kill()
    assert worker.returncode == 0, err[-2000:]
    assert time.monotonic() - started < 5
    assert out == "Applied 3 deliveries.\n"
    assert "SIGTERM: stopping after the delivery in hand." in err


def test_own_worker_waits_out_a_database_error_then_carries_on(send, settings, tmp_path):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
    table = connection.ops.quote_name(WebhookDelivery._meta.db_table)
    away = connection.ops.quote_name(f"{WebhookDelivery._meta.db_table}_away")
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        worker = subprocess.Popen(
            worker_command("deliveries", burst=False),
            env=worker_env("deliveries"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        # Its claims fail, as they would on a database restarting or failing over.
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} RENAME TO {away}")
        try:
            wait_for(lambda: log.read_text().count("Cannot claim deliveries (ProgrammingError") >= 2)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {away} RENAME TO {table}")
        assert worker.poll() is None  # still running

        send(opportunity_event("created", "opp_1"), key="k1")
        wait_for(lambda: Opportunity.objects.filter(remote_id="opp_1").exists())
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=10)
    finally:
        worker.kill()
    assert worker.returncode == 0, log.read_text()[-2000:]
    assert out == "Applied 1 delivery.\n"
    # Waiting longer each time: 0.2 s, then 0.4 s (its --interval is 0.1 s).
    assert "trying again in 0.2 s" in log.read_text() and "trying again in 0.4 s" in log.read_text()


def test_a_batch_run_of_the_own_worker_ends_on_a_database_error(settings):
    settings.MORPH_WEBHOOKS = {**settings.MORPH_WEBHOOKS, "PROCESSING": "deferred", "QUEUE": "deliveries"}
    table = connection.ops.quote_name(WebhookDelivery._meta.db_table)
    away = connection.ops.quote_name(f"{WebhookDelivery._meta.db_table}_away")
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {away}")
    try:
        run = subprocess.run(
            worker_command("deliveries"),
            env=worker_env("deliveries"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {away} RENAME TO {table}")
    # Cron sees it fail and mails its error.
    assert run.returncode == 1
    assert "ProgrammingError" in run.stderr and "Cannot claim" not in run.stderr
