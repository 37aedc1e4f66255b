"""The memory job: mixed events sent to the app while each gunicorn worker's RSS is sampled."""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Gunicorn, log, parse_wrk, run_wrk
from benchmarks.throughput import APP_PATH, delivery_cursor, drain, outcomes_since, url_for, wrk


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_memory(args: argparse.Namespace, server: Gunicorn, token: str) -> dict[str, Any]:
    """Send ``--memory-events`` mixed events and sample every worker's RSS once a second."""
    events = args.memory_events
    log(f"\nMemory: {events} mixed events to the app, RSS of each worker sampled every second")
    # Warm: imports, caches and the connection are in place before the first sample.
    run_wrk(wrk(args, url_for(server, APP_PATH, token), "mixed", 3))
    before = delivery_cursor()
    samples: dict[int, list[tuple[float, int]]] = {}
    started = time.monotonic()
    # An upper bound on the duration; wrk is interrupted as soon as enough events are logged.
    process = subprocess.Popen(
        wrk(args, url_for(server, APP_PATH, token), "mixed", 3600),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def sample() -> None:
        elapsed = time.monotonic() - started
        for pid in server.workers():
            rss = rss_kib(pid)
            if rss is not None:
                samples.setdefault(pid, []).append((elapsed, rss))

    while process.poll() is None:
        sample()
        # Every delivery takes the next primary key: the newest one says how many were logged.
        if delivery_cursor() - before >= events:
            process.send_signal(signal.SIGINT)
            break
        time.sleep(1)
    output = process.communicate()[0]
    drain(APP_PATH)
    sample()
    result = parse_wrk(output)
    outcomes = outcomes_since(before)
    workers = {
        str(pid): {
            "start_kib": points[0][1],
            "end_kib": points[-1][1],
            "max_kib": max(rss for _, rss in points),
            "samples": len(points),
            "series_kib": [rss for _, rss in points],
        }
        for pid, points in samples.items()
    }
    log(
        f"  {sum(outcomes.values())} events logged in {time.monotonic() - started:.0f} s "
        f"({result['rps']:.1f} req/s); answers {outcomes}"
    )
    for pid, figure in workers.items():
        log(
            f"  worker {pid}: start {figure['start_kib'] / 1024:.1f} MiB, end {figure['end_kib'] / 1024:.1f}"
            f" MiB, max {figure['max_kib'] / 1024:.1f} MiB ({figure['samples']} samples)"
        )
    return {"events": sum(outcomes.values()), "wrk": result, "outcomes": outcomes, "workers": workers}
