"""What the benchmarks and the soak test share: throwaway databases, Django set up for them,
gunicorn on a free port, wrk, and the result files.

Every script of ``benchmarks/`` and ``soak/`` is run as ``python <dir>/<script>.py``, which puts
its own directory first on the path; each puts the checkout's root there instead before it
imports this module (see the top of ``benchmarks/run.py``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
HOST = "127.0.0.1"
# The connections and the stages (HubSpot's default pipeline's) that the generated data and the
# soak test's events both use.
CONNECTORS = ("hubspot", "salesforce", "pipedrive")
OWNERS = ("tenant_1", "tenant_2")
STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)
# What gunicorn's and the app's logs say when something went wrong: worker timeouts and crashes,
# 5xx answers, tracebacks.
PROBLEM_MARKERS = ("WARNING", "ERROR", "CRITICAL", "Traceback", "TIMEOUT")


def log(message: str) -> None:
    print(message, flush=True)


# --- Databases ------------------------------------------------------------------------------------


def recreate_database(url: str) -> str:
    """Drop the PostgreSQL database of ``url`` and create it empty; return ``url``."""
    from psycopg import sql

    with _maintenance(url) as (conn, name):
        # FORCE: a previous run killed half-way may have left connections behind.
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return url


def drop_database(url: str) -> None:
    from psycopg import sql

    with _maintenance(url) as (conn, name):
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


@contextmanager
def _maintenance(url: str) -> Iterator[tuple[Any, Any]]:
    """A connection to the server's maintenance database (one cannot drop the database one is in)
    and the name of ``url``'s database, quoted."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        yield conn, sql.Identifier(parts.path.lstrip("/"))


@contextmanager
def throwaway_database(url: str) -> Iterator[str]:
    """A new empty PostgreSQL database for the block, dropped after it, also on failure."""
    recreate_database(url)
    try:
        yield url
    finally:
        drop_database(url)


def fresh_sqlite(path: Path) -> str:
    """Remove the SQLite database at ``path`` (and its WAL files); return its URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def fresh_database(kind: str, name: str, sqlite_path: Path) -> str:
    """The URL of an empty database: ``name`` on the PostgreSQL server, or a SQLite file."""
    return fresh_sqlite(sqlite_path) if kind == "sqlite" else recreate_database(f"{PG_SERVER}/{name}")


def postgres_version() -> str:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres") as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "unknown"


# --- Django ---------------------------------------------------------------------------------------


def secrets_env() -> dict[str, str]:
    """One Django secret key and one webhook secret for every process of a run: gunicorn's workers
    each import the settings, and must agree on them."""
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "MORPH_WEBHOOKS_SECRET": secrets.token_urlsafe(32),
    }


def setup_django(env: Mapping[str, str]) -> None:
    """Configure this process as the servers and workers it starts will be."""
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def migrate() -> None:
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0, interactive=False)
    # gunicorn's workers are separate processes; this one must not hold connections meanwhile.
    connections.close_all()


# --- gunicorn -------------------------------------------------------------------------------------


def free_port() -> int:
    # The port is free when asked; another process could take it before the server binds it, in
    # which case the server fails to start and says so.
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def ensure_gunicorn() -> None:
    try:
        metadata.version("gunicorn")
    except metadata.PackageNotFoundError:
        log("gunicorn not found in the virtual environment: pip install gunicorn")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "gunicorn"], check=True)


class Gunicorn:
    """gunicorn serving ``app`` on a free port of 127.0.0.1, its output in ``log_path``; started
    when made, answering once every worker has booted and ``probe`` answers below 500. A context
    manager that always stops it."""

    def __init__(
        self,
        app: str,
        *,
        workers: int,
        env: Mapping[str, str],
        log_path: Path,
        options: Sequence[str] = (),
        probe: str = "/",
        startup_timeout: float = 60,
    ) -> None:
        try:
            version = tuple(int(part) for part in re.findall(r"\d+", metadata.version("gunicorn"))[:2])
        except metadata.PackageNotFoundError:
            raise SystemExit(
                "gunicorn is not installed: run `make install` (it is in the dev extra)."
            ) from None
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            f"--workers={workers}",
            f"--bind={HOST}:{self.port}",
            f"--chdir={ROOT}",
            *options,
        ]
        if version >= (25, 1):
            # Otherwise every run shares one control socket in $HOME, and concurrent runs collide.
            command.append("--no-control-socket")
        command.append(app)
        # One run's log only, so that what problems() finds belongs to this run. gunicorn's own log
        # and the project's console logging (warnings and errors of the app and of django.request)
        # both go to stderr: kept together in one file.
        with log_path.open("wb") as output:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=dict(env), stdout=output, stderr=subprocess.STDOUT
            )
        self._wait_until_ready(workers, probe, startup_timeout)

    def _wait_until_ready(self, workers: int, probe: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            booted = self.log_path.read_text(errors="replace").count("Booting worker with pid")
            if booted >= workers and self._answers(probe):
                return
            time.sleep(0.2)
        status = self.process.poll()
        self.stop()
        raise SystemExit(
            f"gunicorn did not start within {timeout:g} s"
            + (f" (it exited with status {status})" if status is not None else "")
            + f"; see {self.log_path}:\n{self.log_path.read_text(errors='replace')[-3000:]}"
        )

    def _answers(self, path: str) -> bool:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            connection.request("GET", path)
            return connection.getresponse().status < 500
        except OSError:
            return False
        finally:
            connection.close()

    def workers(self) -> list[int]:
        """The master's children, found through /proc (no dependency on psutil)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Field 4 (ppid) follows the command name, which is in parentheses and may hold spaces.
            if int(stat.rpartition(")")[2].split()[1]) == self.process.pid:
                pids.append(int(entry.name))
        return sorted(pids)

    def problems(self) -> list[str]:
        """gunicorn's and the app's warnings and errors (worker timeouts, 5xx, tracebacks)."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if any(marker in line for marker in PROBLEM_MARKERS)]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        # SIGTERM: a graceful shutdown, the workers finish the requests they are handling.
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


# --- wrk ------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk not found: installing the Debian package (apt-get install -y wrk)")
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet).returncode != 0:
        # A fresh container has no package lists yet.
        subprocess.run(["apt-get", "update"], check=True, **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, **quiet)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is still not on PATH after apt-get install wrk")
    return found


def wrk_command(
    wrk: str,
    url: str,
    *,
    threads: int,
    connections: int,
    duration: float,
    script: Path,
    script_args: Sequence[str],
) -> list[str]:
    return [
        wrk,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        "10s",
        # The latency distribution (p50 to p99.999), printed next to the script's own summary.
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        *script_args,
    ]


def parse_wrk(output: str) -> dict[str, Any]:
    """The summary the Lua script prints on its ``BENCH_JSON`` line, with requests per second and
    the median and 99th percentile latencies in milliseconds."""
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            seconds = data["duration_us"] / 1e6
            data["rps"] = data["requests"] / seconds if seconds else 0.0
            data["p50_ms"] = data["p50_us"] / 1000
            data["p99_ms"] = data["p99_us"] / 1000
            return data
    raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{output}")


def run_wrk(command: Sequence[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


# --- Result files ---------------------------------------------------------------------------------


def read_results(path: Path) -> dict[str, Any]:
    """What ``path`` holds, or nothing if it does not exist yet."""
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return results


def write_results(path: Path, results: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
