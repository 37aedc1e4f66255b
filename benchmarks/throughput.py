"""The HTTP throughput job: wrk against the app's endpoint and the two yardsticks under gunicorn,
in interleaved rounds, every answer checked."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Gunicorn, log, run_wrk, wrk_command

LUA = ROOT / "benchmarks" / "lua" / "events.lua"

APP_PATH = "/webhooks/morph/"
NAIVE_PATH = "/bench/naive/"
BARE_PATH = "/bench/bare/"

# What the app may answer in each kind of run, as its request log records it ("status http").
PROCESSED = frozenset({"processed 200"})
# Mixed: an update overtaking its create under load (the create then loses to it) is answered
# stale, as it should be.
PROCESSED_DUPLICATE_OR_STALE = frozenset({"processed 200", "duplicate 200", "stale 200"})
DUPLICATE = frozenset({"duplicate 200"})


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    mode: str  # events.lua's mode: new, mixed or resend
    answers: frozenset[str] = frozenset()  # the app's allowed answers; empty for the yardsticks


# Interleaved in this order in every round.
SCENARIOS = [
    Scenario("bare", BARE_PATH, "new"),
    Scenario("naive new", NAIVE_PATH, "new"),
    Scenario("app new", APP_PATH, "new", PROCESSED),
    Scenario("naive mixed", NAIVE_PATH, "mixed"),
    Scenario("app mixed", APP_PATH, "mixed", PROCESSED_DUPLICATE_OR_STALE),
    Scenario("naive resend", NAIVE_PATH, "resend"),
    Scenario("app resend", APP_PATH, "resend", DUPLICATE),
]


def serve(args: argparse.Namespace, env: Mapping[str, str], log_path: Path) -> Gunicorn:
    """``benchmarks.settings`` under gunicorn: a fixed count of sync workers."""
    return Gunicorn(
        "benchmarks.wsgi:application",
        workers=args.workers,
        env=env,
        log_path=log_path,
        options=[
            "--worker-class=sync",
            # wrk's connections queue here while both workers are busy; the default (2048) is
            # spelt out because a short backlog would turn queueing into connect errors.
            "--backlog=2048",
            "--timeout=120",
        ],
        probe=BARE_PATH,
        startup_timeout=30,
    )


def load() -> str:
    # Printed with every round: other processes on a small machine move the figures, and the
    # reader should be able to see when that happened.
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# --- What the endpoints did, read back from the database ---------------------------------------


def delivery_cursor() -> int:
    from morph_webhooks.models import WebhookDelivery

    last = WebhookDelivery.objects.order_by("-pk").values_list("pk", flat=True).first()
    return last or 0


def outcomes_since(pk: int) -> dict[str, int]:
    """What the app answered after delivery ``pk``, read back from its own request log."""
    from django.db import connections
    from django.db.models import Count

    from morph_webhooks.models import WebhookDelivery

    rows = (
        WebhookDelivery.objects.filter(pk__gt=pk)
        .values_list("status", "http_status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = {f"{status} {http_status}": n for status, http_status, n in rows}
    connections.close_all()
    return counts


def naive_counts() -> dict[str, int]:
    from django.db import connections

    from benchmarks.naive.models import Deal, SeenKey

    counts = {"keys": SeenKey.objects.count(), "deals": Deal.objects.count()}
    connections.close_all()
    return counts


# --- Requests -----------------------------------------------------------------------------------


def wrk(
    args: argparse.Namespace, url: str, mode: str, duration: float, resends: Path | None = None
) -> list[str]:
    """wrk sending events.lua's ``mode`` events to ``url`` for ``duration`` seconds."""
    per_thread = max(1, args.connections // args.threads)
    # Updates and re-sends reach back further than any request still in flight (see events.lua).
    min_age = max(64, 4 * per_thread)
    return wrk_command(
        args.wrk,
        url,
        threads=args.threads,
        connections=args.connections,
        duration=duration,
        script=LUA,
        script_args=[mode, secrets.token_hex(6), str(min_age), *([str(resends)] if resends else [])],
    )


def url_for(server: Gunicorn, path: str, token: str) -> str:
    # Both the app and the hand-written receiver read the secret from the URL, as Morph sends it.
    return f"{server.base}{path}" if path == BARE_PATH else f"{server.base}{path}?token={token}"


def post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **headers}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answered: dict[str, Any] = json.loads(answer.read())
        return answered


def smoke_test(server: Gunicorn, token: str, app_answer: str) -> None:
    """One request to each endpoint with the testing helpers' body: fail early and clearly."""
    from morph_webhooks.testing import morph_headers, opportunity_event

    for path, expected in ((APP_PATH, app_answer), (NAIVE_PATH, "processed")):
        # Its own opportunity each time: another server's smoke test must not make it stale.
        body = json.dumps(opportunity_event(remote_id=f"smoke-{secrets.token_hex(6)}")).encode()
        answered = post(url_for(server, path, token), body, morph_headers())
        if answered != {"status": expected}:
            sys.exit(f"{path} answered {answered}")


def warm_up(args: argparse.Namespace, server: Gunicorn, token: str, scenarios: list[Scenario]) -> None:
    # Imports, caches, connections and the first pages of each table in place before timing.
    for path in dict.fromkeys(scenario.path for scenario in scenarios):
        run_wrk(wrk(args, url_for(server, path, token), "new", 3))
        drain(path)


# --- Rounds -------------------------------------------------------------------------------------


def measure(
    args: argparse.Namespace,
    server: Gunicorn,
    token: str,
    scenarios: list[Scenario],
    problems: list[str],
    resends: Path | None = None,
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {scenario.name: [] for scenario in scenarios}
    for round_number in range(1, args.rounds + 1):
        for scenario in scenarios:
            path = scenario.path
            before = delivery_cursor() if path == APP_PATH else 0
            naive_before = naive_counts() if path == NAIVE_PATH else {}
            result = run_wrk(wrk(args, url_for(server, path, token), scenario.mode, args.duration, resends))
            drain(path)
            if path == APP_PATH:
                result["outcomes"] = outcomes_since(before)
            elif path == NAIVE_PATH:
                after = naive_counts()
                result["stored"] = {key: after[key] - naive_before[key] for key in after}
            result["load"] = load()
            result["problems"] = wrong_answers(scenario, result)
            problems.extend(
                f"round {round_number} {scenario.name}: {problem}" for problem in result["problems"]
            )
            runs[scenario.name].append(result)
            errors = {kind: n for kind, n in result["errors"].items() if n}
            log(
                f"  round {round_number} {scenario.name:<13}{result['rps']:8.1f} req/s  "
                f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms"
                + (f"  errors {errors}" if errors else "")
                + (f"  {result['outcomes']}" if "outcomes" in result else "")
                + (f"  stored {result['stored']}" if "stored" in result else "")
                + f"  load {result['load']}"
                + "".join(f"\n    WRONG: {problem}" for problem in result["problems"])
            )
    return runs


def wrong_answers(scenario: Scenario, result: dict[str, Any]) -> list[str]:
    """What shows that a run did not do its work: wrk's errors (non-2xx answers, timeouts), an
    answer the app should not give here, or fewer requests logged or stored than answered."""
    problems = [f"wrk counted {n} {kind} errors" for kind, n in result["errors"].items() if n]
    answered = result["requests"]
    if scenario.path == APP_PATH:
        outcomes: dict[str, int] = result["outcomes"]
        unexpected = {outcome: n for outcome, n in outcomes.items() if outcome not in scenario.answers}
        if unexpected:
            problems.append(f"the app answered {unexpected}, expected only {sorted(scenario.answers)}")
        # Requests still queued in gunicorn when wrk stopped are logged too: at least as many.
        if sum(outcomes.values()) < answered:
            problems.append(f"{answered} requests answered, {sum(outcomes.values())} in the request log")
    elif scenario.path == NAIVE_PATH:
        keys, deals = result["stored"]["keys"], result["stored"]["deals"]
        if scenario.mode == "new" and not (keys >= answered and deals == keys):
            problems.append(f"{answered} new events answered, {keys} keys and {deals} deals stored")
        if scenario.mode == "mixed" and not (
            keys >= answered - result["generated"]["resends"] and deals <= keys
        ):
            problems.append(f"{answered} mixed events answered, {keys} keys and {deals} deals stored")
        if scenario.mode == "resend" and (keys or deals):
            problems.append(f"re-sends stored {keys} keys and {deals} deals, expected none")
    return problems


def drain(path: str) -> None:
    """Wait for the requests still queued in gunicorn when wrk stopped: they are answered after
    wrk's report, and would otherwise be counted in (and slow down) the next scenario."""

    def progress() -> object:
        if path == APP_PATH:
            return delivery_cursor()
        return naive_counts() if path == NAIVE_PATH else None

    last, deadline = progress(), time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = progress()
        if current == last:
            return
        last = current


def medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            metric: statistics.median(run[metric] for run in results)
            for metric in ("rps", "p50_ms", "p99_ms")
        }
        for name, results in runs.items()
        if results
    }


def print_table(title: str, figures: dict[str, dict[str, float]]) -> None:
    log(f"\n{title}")
    log(f"  {'scenario':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, figure in figures.items():
        log(f"  {name:<14}{figure['rps']:>10.1f}{figure['p50_ms']:>10.2f}{figure['p99_ms']:>10.2f}")
