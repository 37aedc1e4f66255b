#!/usr/bin/env python
"""The endpoint's throughput while the app prunes a day of deliveries, or migrates, on the big
database ``benchmarks/bigdata.py`` filled, against the same endpoint meanwhile idle, and against
an empty database; the longest lock wait and transaction seen meanwhile.

    .venv/bin/python benchmarks/bigload.py [--database mw_big_bench] [--rounds 3]
        [--batch-size 1000] [--pause 0] [--migrate]

gunicorn (2 sync workers) serves ``benchmarks.settings`` on the big database; wrk (16
connections) sends new crmOpportunity events (``benchmarks/lua/events.lua``). Each round:

1. **idle**: wrk alone, as long as the last prune took (20 s the first time);
2. **prune**: ``morph_webhooks_prune`` deletes a day of the request log (``--deliveries-days``
   29, then 28...: on data just filled, 400,000 then 333,000 deliveries each), wrk running from
   its start to its end;
3. **empty** (once per round): the same wrk against a second gunicorn on an empty, migrated
   database (``<database>_empty``, dropped at the end).

With ``--migrate``, a last round rebuilds migration 0015's indexes (migrated back to 0014, then
forward: DROP/CREATE INDEX CONCURRENTLY) while wrk runs.

Meanwhile a sampler reads ``pg_stat_activity`` every 20 ms: the longest any other session (the
endpoint's) waited for a lock, and the longest transaction of the prune or migration (its locks
are held until it ends). The ratios compare figures of the same run: other work on a small machine
moves absolute figures between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if Path(sys.path[0]).resolve() == ROOT / "benchmarks":
    sys.path[0] = str(ROOT)

from benchmarks.bigdata import bench_env  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    PG_SERVER,
    RESULTS,
    Gunicorn,
    drop_database,
    ensure_wrk,
    log,
    migrate,
    parse_wrk,
    recreate_database,
    setup_django,
    wrk_command,
)

LUA = ROOT / "benchmarks" / "lua" / "events.lua"
APP_PATH = "/webhooks/morph/"
BARE_PATH = "/bench/bare/"


class Sampler(threading.Thread):
    """Polls pg_stat_activity: the longest lock wait of the other sessions (the endpoint's), and
    of the session whose query matches ``pattern`` (the prune's DELETEs, the migration's DDL:
    CREATE INDEX CONCURRENTLY waits for older transactions without stopping anyone), and that
    session's longest transaction (its locks are held until it ends)."""

    def __init__(self, url: str, pattern: str) -> None:
        super().__init__(daemon=True)
        self.url, self.pattern = url, pattern
        self.longest_wait = 0.0
        self.longest_own_wait = 0.0
        self.longest_transaction = 0.0
        self.waits_seen = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopping.is_set():
                rows = conn.execute(
                    """
                    SELECT wait_event_type = 'Lock', extract(epoch FROM now() - query_start),
                           query ILIKE %s, extract(epoch FROM now() - xact_start)
                    FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()
                      AND state <> 'idle'
                    """,
                    [self.pattern],
                ).fetchall()
                for waiting, waited, ours, transaction in rows:
                    if waiting and ours:
                        self.longest_own_wait = max(self.longest_own_wait, float(waited or 0))
                    elif waiting:
                        self.waits_seen += 1
                        self.longest_wait = max(self.longest_wait, float(waited or 0))
                    if ours and transaction is not None:
                        self.longest_transaction = max(self.longest_transaction, float(transaction))
                time.sleep(0.02)

    def stop(self) -> dict[str, Any]:
        self.stopping.set()
        self.join()
        return {
            "longest_lock_wait_s": round(self.longest_wait, 3),
            "lock_wait_samples": self.waits_seen,
            "longest_own_lock_wait_s": round(self.longest_own_wait, 3),
            "longest_transaction_s": round(self.longest_transaction, 3),
        }


def wrk(args: argparse.Namespace, server: Gunicorn, duration: float) -> list[str]:
    url = f"{server.base}{APP_PATH}?token={os.environ['MORPH_WEBHOOKS_SECRET']}"
    return wrk_command(
        args.wrk,
        url,
        threads=2,
        connections=16,
        duration=duration,
        script=LUA,
        script_args=["new", os.urandom(6).hex(), "64"],
    )


def run_wrk(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


def under(args: argparse.Namespace, server: Gunicorn, command: list[str], pattern: str) -> dict[str, Any]:
    """wrk from ``command``'s start to its end, the sampler watching."""
    sampler = Sampler(args.url, pattern)
    sampler.start()
    load = subprocess.Popen(
        wrk(args, server, 3600), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=args.env)
    took = time.monotonic() - started
    load.send_signal(signal.SIGINT)
    output, _ = load.communicate()
    locks = sampler.stop()
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return {"seconds": round(took, 1), "output": done.stdout.strip(), **locks, **summary(parse_wrk(output))}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "rps": round(result["rps"], 1),
        "p99_ms": round(result["p99_ms"], 1),
        "requests": result["requests"],
    }


def manage(*arguments: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *arguments]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=PG_SERVER)
    parser.add_argument("--database", default="mw_big_bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument(
        "--first-day",
        type=int,
        default=29,
        help="the first round prunes deliveries older than this many days, the next one day less (default 29)",
    )
    parser.add_argument(
        "--migrate", action="store_true", help="also rebuild migration 0015's indexes under load"
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "bigload.json")
    args = parser.parse_args(argv)
    args.url = f"{args.server}/{args.database}"
    args.wrk = ensure_wrk()
    empty_url = recreate_database(f"{args.server}/{args.database}_empty")
    env = args.env = {**os.environ, **bench_env(args.url)}
    # The secret the servers share, read by wrk's URL.
    os.environ["MORPH_WEBHOOKS_SECRET"] = env["MORPH_WEBHOOKS_SECRET"]
    # This process migrates the empty database; the servers and the commands get their own env.
    setup_django(bench_env(empty_url))
    migrate()
    logs = RESULTS / "bigload"
    logs.mkdir(parents=True, exist_ok=True)
    rounds: list[dict[str, Any]] = []
    try:
        with (
            Gunicorn(
                "benchmarks.wsgi:application", workers=2, env=env, log_path=logs / "big.log", probe=BARE_PATH
            ) as big,
            Gunicorn(
                "benchmarks.wsgi:application",
                workers=2,
                env={**env, **bench_env(empty_url)},
                log_path=logs / "empty.log",
                probe=BARE_PATH,
            ) as empty,
        ):
            last = 20.0
            for index in range(args.rounds):
                idle = summary(run_wrk(wrk(args, big, last)))
                prune = under(
                    args,
                    big,
                    manage(
                        "morph_webhooks_prune",
                        "--deliveries-days",
                        str(args.first_day - index),
                        "--keys-days",
                        "30",
                        "--batch-size",
                        str(args.batch_size),
                        "--pause",
                        str(args.pause),
                    ),
                    "DELETE FROM%",
                )
                # wrk takes whole seconds.
                last = float(max(round(prune["seconds"]), 5))
                on_empty = summary(run_wrk(wrk(args, empty, last)))
                rounds.append({"idle": idle, "prune": prune, "empty": on_empty})
                log(
                    f"round {index + 1}: idle {idle['rps']} req/s, during the prune {prune['rps']} req/s "
                    f"({prune['rps'] / idle['rps']:.2f}x; {prune['output']!r} in {prune['seconds']} s, "
                    f"longest transaction {prune['longest_transaction_s']} s, longest lock wait "
                    f"{prune['longest_lock_wait_s']} s), empty database {on_empty['rps']} req/s "
                    f"(big/empty {idle['rps'] / on_empty['rps']:.2f}x)"
                )
            if args.migrate:
                back = subprocess.run(
                    manage("migrate", "morph_webhooks", "0014"),
                    check=True,
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                log(back.stdout.strip())
                idle = summary(run_wrk(wrk(args, big, last)))
                forward = under(args, big, manage("migrate", "morph_webhooks", "0015"), "CREATE INDEX%")
                rounds.append({"idle": idle, "migrate": forward})
                log(
                    f"migration 0015 under load: {forward['rps']} req/s against {idle['rps']} idle "
                    f"({forward['rps'] / idle['rps']:.2f}x) in {forward['seconds']} s; longest lock wait of "
                    f"the endpoint {forward['longest_lock_wait_s']} s, of the migration itself (waiting for "
                    f"older transactions) {forward['longest_own_lock_wait_s']} s"
                )
            problems = big.problems() + empty.problems()
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(empty_url)
    if problems:
        log("gunicorn logged problems:\n  " + "\n  ".join(problems[:20]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"batch_size": args.batch_size, "pause": args.pause, "rounds": rounds}, indent=2)
    )


if __name__ == "__main__":
    main()
