"""Reporting: the machine a run measured on, the rows of the targets table with their verdicts,
and that table for CONTRIBUTING.md (Benchmark)."""

from __future__ import annotations

import datetime
import math
import os
import platform
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import log, postgres_version


def machine(database: str) -> dict[str, Any]:
    import django

    model = next(
        (
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": postgres_version() if database == "postgresql" else "",
        "sqlite": sqlite3.sqlite_version,
        "database": database,
    }


@dataclass(frozen=True)
class Target:
    scenario: str
    app: float
    yardstick: float
    unit: str
    target: float
    stretch: float | None
    at_most: bool = False  # latency: lower is better

    @property
    def ratio(self) -> float:
        return self.app / self.yardstick if self.yardstick else 0.0

    def meets(self, bound: float | None) -> bool | None:
        if bound is None:
            return None
        return self.ratio <= bound if self.at_most else self.ratio >= bound

    def bound(self, value: float | None) -> str:
        return "" if value is None else f"{'<=' if self.at_most else '>='} {value:.1f}x"

    def verdict(self) -> str:
        if not self.meets(self.target):
            return "not met"
        return "stretch met" if self.meets(self.stretch) else "met"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "app": self.app,
            "yardstick": self.yardstick,
            "unit": self.unit,
            "ratio": self.ratio,
            "target": self.bound(self.target),
            "stretch": self.bound(self.stretch),
            "met": self.meets(self.target),
            "stretch_met": self.meets(self.stretch),
        }


def targets(report: dict[str, Any], workers: int) -> list[Target]:
    """The rows of issue 11's table that this run measured."""
    rows = []
    main: dict[str, dict[str, float]] = report.get("empty", {}).get("medians", {})
    postgres = report["machine"]["database"] == "postgresql"
    sqlite = main if not postgres else report.get("sqlite", {}).get("empty", {}).get("medians", {})

    def rps(figures: dict[str, dict[str, float]], name: str) -> float:
        # NaN for a scenario left out (--scenarios): its rows are left out of the table below.
        return figures.get(name, {}).get("rps", math.nan)

    if postgres and main:
        rows += [
            Target(
                "new events, sync mode, app / hand-written",
                rps(main, "app new"),
                rps(main, "naive new"),
                "req/s",
                1.0,
                1.5,
            ),
            Target(
                "mixed 70/20/10, app / hand-written",
                rps(main, "app mixed"),
                rps(main, "naive mixed"),
                "req/s",
                1.0,
                1.5,
            ),
            Target(
                "re-sent events, app / hand-written's duplicate path",
                rps(main, "app resend"),
                rps(main, "naive resend"),
                "req/s",
                1.5,
                2.0,
            ),
        ]
    for queue, deferred in (report.get("deferred", {}) if postgres else {}).items():
        figures = deferred["medians"]
        rows.append(
            Target(
                f"deferred mode ({queue}), endpoint only, app / hand-written",
                rps(figures, "app deferred"),
                rps(figures, "naive new"),
                "req/s",
                1.5,
                2.0,
            )
        )
        if main:
            rows.append(
                Target(
                    f"deferred mode ({queue}), one worker: deliveries/s / sync-mode app req/s per worker",
                    deferred["worker"]["deliveries_per_second"],
                    rps(main, "app new") / workers,
                    "/s",
                    1.0,
                    None,
                )
            )
    if postgres and main:
        for kind in ("new", "mixed"):
            rows.append(
                Target(
                    f"p99 latency, {kind}, app / hand-written",
                    main.get(f"app {kind}", {}).get("p99_ms", math.nan),
                    main.get(f"naive {kind}", {}).get("p99_ms", math.nan),
                    "ms",
                    1.0,
                    0.7,
                    at_most=True,
                )
            )
    if "app new" in sqlite and "naive new" in sqlite:
        rows.append(
            Target(
                "SQLite, new events, app / hand-written",
                rps(sqlite, "app new"),
                rps(sqlite, "naive new"),
                "req/s",
                1.0,
                None,
            )
        )
    return [row for row in rows if not (math.isnan(row.app) or math.isnan(row.yardstick))]


def print_targets(rows: list[Target], rounds: int) -> None:
    width = max(len(row.scenario) for row in rows) + 2
    log(f"\nTargets (issue 11): medians of {rounds} rounds")
    log(
        f"  {'scenario':<{width}}{'app':>14}{'compared with':>15}{'ratio':>8}{'target':>10}{'stretch':>10}  verdict"
    )
    for row in rows:
        log(
            f"  {row.scenario:<{width}}{row.app:>8.1f} {row.unit:<5}{row.yardstick:>9.1f} {row.unit:<5}"
            f"{row.ratio:>7.2f}x{row.bound(row.target):>10}{row.bound(row.stretch):>10}  {row.verdict()}"
        )


def markdown(report: dict[str, Any], rows: list[Target]) -> str:
    machine, settings = report["machine"], report["settings"]
    lines = [
        f"Measured {machine['date']} on {machine['cores']} cores ({machine['cpu']}), Python "
        f"{machine['python']}, Django {machine['django']}, "
        + (f"PostgreSQL {machine['postgresql']}, " if machine["postgresql"] else "")
        + f"SQLite {machine['sqlite']}; gunicorn with {settings['workers']} sync workers, wrk with "
        f"{settings['connections']} connections, medians of {settings['rounds']} rounds of "
        f"{settings['duration']:g} s (`benchmarks/run.py`).",
        "",
        "| scenario | app | compared with | ratio | target | stretch | |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.scenario} | {row.app:,.1f} {row.unit} | {row.yardstick:,.1f} {row.unit} | "
            f"{row.ratio:.2f}x | {row.bound(row.target)} | {row.bound(row.stretch)} | {row.verdict()} |"
        )
    return "\n".join(lines) + "\n"
