"""Send a short, realistic story of Morph webhook events to a running server.

Start the server first (``python manage.py runserver``), then run
``python manage.py send_example_events`` and look at the results in the admin.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from morph_webhooks.conf import conf
from morph_webhooks.redaction import TOKEN_PARAMETER
from morph_webhooks.testing import morph_headers, opportunity_event, reference, resource_event, timestamp

DEFAULT_URL = "http://127.0.0.1:8000/webhooks/morph/"
PIPELINE = "default"


@dataclass(frozen=True)
class Deal:
    """One CRM opportunity as HubSpot (through Morph) would describe it."""

    remote_id: str
    name: str
    amount: Decimal
    currency: str
    stage: str
    crm_owner: str
    contact: str
    company: str
    created_at: datetime

    def event(self, action: str, at: datetime) -> dict[str, Any]:
        fields = {
            "name": self.name,
            # Morph documents the amount as a string but sends a number; send what it sends.
            "amount": float(self.amount) if self.amount % 1 else int(self.amount),
            "currency": self.currency,
            "stage": reference("crmStage", self.stage),
            "pipeline": reference("crmPipeline", PIPELINE),
            "owner": reference("genericUser", self.crm_owner),
            "contacts": [reference("genericContact", self.contact)],
            "companies": [reference("genericCompany", self.company)],
            "engagements": [],
        }
        raw = {
            "id": self.remote_id,
            "properties": {
                "dealname": self.name,
                "amount": str(self.amount),
                "deal_currency_code": self.currency,
                "dealstage": self.stage,
                "pipeline": PIPELINE,
                "hubspot_owner_id": self.crm_owner,
                "createdate": timestamp(self.created_at),
                "hs_lastmodifieddate": timestamp(at),
            },
            "archived": action == "deleted",
        }
        return opportunity_event(
            action, self.remote_id, created_at=self.created_at, updated_at=at, fields=fields, rawResource=raw
        )


@dataclass(frozen=True)
class Step:
    description: str
    expected: str
    payload: dict[str, Any]

    @property
    def idempotency_key(self) -> str:
        # Connectors build the key from the change they report, so a re-sent notification (the
        # same payload) comes with the same key, and a different change with a different one.
        data = self.payload["data"]
        # (fromisoformat only reads a trailing "Z" from Python 3.11 on.)
        updated = datetime.fromisoformat(data["updatedAt"].replace("Z", "+00:00"))
        return f"{data['id']}-{self.payload['event'].partition('::')[2]}-{int(updated.timestamp() * 1000)}"


# The story's ids and times are fixed, as a CRM's are: running the command again sends the same
# events with the same keys, and the server answers them "duplicate", as it answers Morph's
# re-sends, instead of storing the same deals again under new ids.
STORY_START = datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)


def build_story() -> list[Step]:
    start = STORY_START

    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    acme = Deal(
        "18011960101", "Acme Corp - annual renewal", Decimal("48000"), "EUR",
        "appointmentscheduled", "user_2201", "contact_ada", "company_acme", at(0),
    )  # fmt: skip
    globex = Deal(
        "18011960102", "Globex - 250 seat expansion", Decimal("86250.50"), "USD",
        "qualifiedtobuy", "user_2202", "contact_hank", "company_globex", at(1),
    )  # fmt: skip
    initech = Deal(
        "18011960103", "Initech - pilot project", Decimal("9900"), "GBP",
        "appointmentscheduled", "user_2201", "contact_bill", "company_initech", at(2),
    )  # fmt: skip

    # The CRM's set-up first, so that the admin shows names rather than ids from the start.
    steps = crm_setup(start - timedelta(minutes=5))
    steps += [
        Step(f"new deal {deal.name!r} in {deal.stage}", "processed", deal.event("created", deal.created_at))
        for deal in (acme, globex, initech)
    ]

    acme = replace(acme, stage="qualifiedtobuy")
    steps.append(Step(f"Acme moves to {acme.stage}", "processed", acme.event("updated", at(10))))
    # Kept aside: the CRM's notification of a change at minute 12 arrives late, after the
    # change at minute 20. Its key is new, so only the updatedAt comparison can catch it.
    late = Step("Acme, a late copy of an older change", "stale", acme.event("updated", at(12)))
    acme = replace(acme, stage="presentationscheduled")
    steps.append(Step(f"Acme moves to {acme.stage}", "processed", acme.event("updated", at(20))))

    globex = replace(globex, stage="contractsent", amount=Decimal("91000"))
    contract = Step(
        f"Globex moves to {globex.stage}, amount 91000", "processed", globex.event("updated", at(25))
    )
    steps.append(contract)
    steps.append(
        replace(contract, description="Globex, the same event re-sent (same key)", expected="duplicate")
    )
    steps.append(late)

    acme = replace(acme, amount=Decimal("52500"))
    steps.append(
        Step("Acme amount 52500, same stage (no history row)", "processed", acme.event("updated", at(30)))
    )
    globex = replace(globex, stage="closedwon")
    steps.append(Step(f"Globex moves to {globex.stage}", "processed", globex.event("updated", at(40))))
    steps.append(Step("Initech deal deleted in the CRM", "processed", initech.event("deleted", at(45))))
    call = resource_event(
        "crmEngagement",
        "created",
        "30022510001",
        fields={
            "type": "CALL",
            "direction": "outbound",
            "status": "completed",
            "title": "Renewal call with Ada",
            "startedAt": timestamp(at(48)),
            "endedAt": timestamp(at(50)),
            "duration": 120,
            "owner": reference("genericUser", "user_2201"),
            "contacts": [reference("genericContact", "contact_ada")],
            "companies": [reference("genericCompany", "company_acme")],
            "opportunities": [reference("crmOpportunity", acme.remote_id)],
        },
        created_at=at(50),
        updated_at=at(50),
    )
    steps.append(Step("a call logged with Ada about the Acme deal", "processed", call))
    # The deal's timeline goes on: a meeting booked for next week, and the email confirming it.
    for remote_id, kind, title, minutes in (
        ("30022510002", "meeting", "Contract review with Ada", 60 * 24 * 7),
        ("30022510003", "email", "Agenda for the contract review", 55),
    ):
        activity = resource_event(
            "crmEngagement",
            "created",
            remote_id,
            fields={
                "type": kind,
                "direction": "outbound",
                "status": "planned" if kind == "meeting" else "completed",
                "title": title,
                "startedAt": timestamp(at(minutes)),
                "owner": reference("genericUser", "user_2201"),
                "contacts": [reference("genericContact", "contact_ada")],
                "opportunities": [reference("crmOpportunity", acme.remote_id)],
            },
            created_at=at(55),
            updated_at=at(55),
        )
        steps.append(Step(f"a {kind} with Ada about the Acme deal", "processed", activity))
    workspace = resource_event(
        "genericWorkspace",
        "created",
        "workspace_sales",
        fields={"name": "Sales"},
        created_at=at(0),
        updated_at=at(0),
    )
    steps.append(Step("the CRM's Sales workspace", "processed", workspace))
    recording = resource_event(
        "telephonyCall",
        "created",
        "recording_7",
        fields={"duration": 120},
        created_at=at(50),
        updated_at=at(50),
    )
    steps.append(Step("a phone system's call record (a model the app does not store)", "ignored", recording))
    return steps


# (id, name, type) of the stages of HubSpot's default pipeline.
STAGES = [
    ("appointmentscheduled", "Appointment scheduled", "OPEN"),
    ("qualifiedtobuy", "Qualified to buy", "OPEN"),
    ("presentationscheduled", "Presentation scheduled", "OPEN"),
    ("contractsent", "Contract sent", "OPEN"),
    ("closedwon", "Closed won", "WON"),
    ("closedlost", "Closed lost", "LOST"),
]
USERS = [("user_2201", "Grace", "Hopper"), ("user_2202", "Alan", "Turing")]
COMPANIES = [("company_acme", "Acme Corp"), ("company_globex", "Globex"), ("company_initech", "Initech")]
CONTACTS = [
    ("contact_ada", "Ada", "Lovelace"),
    ("contact_hank", "Hank", "Scorpio"),
    ("contact_bill", "Bill", "Lumbergh"),
]


def crm_setup(at: datetime) -> list[Step]:
    """The pipeline, its stages, the CRM's users, companies and contacts the deals refer to."""

    def created(model: str, remote_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return resource_event(model, "created", remote_id, fields=fields, created_at=at, updated_at=at)

    stages = [reference("crmStage", stage_id) for stage_id, _, _ in STAGES]
    steps = [
        Step(
            "the sales pipeline",
            "processed",
            created("crmPipeline", PIPELINE, {"name": "Sales pipeline", "stages": stages}),
        )
    ]
    steps += [
        Step(
            f"stage {name!r} ({kind})",
            "processed",
            created(
                "crmStage",
                stage_id,
                {"name": name, "type": kind, "pipeline": reference("crmPipeline", PIPELINE)},
            ),
        )
        for stage_id, name, kind in STAGES
    ]
    steps += [
        Step(
            f"CRM user {first} {last}",
            "processed",
            created(
                "genericUser",
                user_id,
                {"firstName": first, "lastName": last, "email": f"{first.lower()}@example.com"},
            ),
        )
        for user_id, first, last in USERS
    ]
    steps += [
        Step(f"company {name}", "processed", created("genericCompany", company_id, {"name": name}))
        for company_id, name in COMPANIES
    ]
    steps += [
        Step(
            f"contact {first} {last}",
            "processed",
            created(
                "genericContact",
                contact_id,
                {
                    "firstName": first,
                    "lastName": last,
                    "email": f"{first.lower()}.{last.lower()}@example.com",
                },
            ),
        )
        for contact_id, first, last in CONTACTS
    ]
    return steps


class NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would carry the secret in the URL to wherever it points, and urllib would turn
    # the POST into a GET; show the redirect as the answer instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxy: the events (and the secret in their URL) go straight to the server named in --url,
# whatever HTTP_PROXY says.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirects)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        # 4xx and 5xx are answers too: the endpoint explains them in its JSON body.
        with exc:
            return exc.code, exc.read().decode("utf-8", errors="replace")


def with_token(url: str, secret: str | None) -> str:
    parts = urllib.parse.urlsplit(url)
    if not secret:
        return url
    query = [(name, value) for name, value in urllib.parse.parse_qsl(parts.query) if name != TOKEN_PARAMETER]
    query.append((TOKEN_PARAMETER, secret))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def login_hint() -> str:
    """How to log in to the admin: the superusers this project's database already has (`make run`
    creates admin / admin), or how to create one."""
    superusers = list(
        get_user_model()
        .objects.filter(is_superuser=True, is_active=True)
        .order_by("pk")
        .values_list(get_user_model().USERNAME_FIELD, flat=True)[:3]
    )
    if not superusers:
        return "create a login with: python manage.py createsuperuser"
    return "log in as " + " or ".join(map(str, superusers))


def worker_command() -> str:
    """The worker that applies the queued events, as this project's settings configure it."""
    if conf.QUEUE == "deliveries":
        return "python manage.py morph_webhooks_worker"
    return "python manage.py db_worker"


def answer_status(body: str) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return "?"
    return str(answer.get("status") or answer.get("error") or "?") if isinstance(answer, dict) else "?"


class Command(BaseCommand):
    help = (
        "Send realistic Morph webhook events (created, updated, a duplicate, a stale update, a delete "
        "and an event for another model) to a running server, and print each answer."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url", default=DEFAULT_URL, help=f"The webhook endpoint (default: {DEFAULT_URL})."
        )
        parser.add_argument(
            "--secret",
            help="The shared secret, sent as ?token=. Default: the first of MORPH_WEBHOOKS['SECRETS'].",
        )
        parser.add_argument("--connector", default="hubspot", help="x-conector-id (default: hubspot).")
        parser.add_argument("--owner", default="tenant_demo", help="x-owner-id (default: tenant_demo).")
        parser.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait for each answer.")

    def handle(self, *args: Any, **options: Any) -> None:
        url: str = options["url"]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(f"--url must be an http:// or https:// URL, got {url!r}.")
        secret = (
            options["secret"] if options["secret"] is not None else next((s for s in conf.SECRETS if s), None)
        )
        target = with_token(url, secret)

        steps = build_story()
        self.stdout.write(
            f"Sending {len(steps)} events to {url} "
            + ("(secret in ?token=)" if secret else "(no secret configured: sending none)")
        )
        answers: Counter[str] = Counter()
        surprises: list[int] = []
        for number, step in enumerate(steps, start=1):
            headers = {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "morph-webhooks-example/1.0",
                **morph_headers(
                    step.idempotency_key, connector_id=options["connector"], owner_id=options["owner"]
                ),
            }
            try:
                code, body = post(target, json.dumps(step.payload).encode(), headers, options["timeout"])
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise CommandError(
                    f"Could not reach {url} ({reason}). Is the server running? "
                    "Start it in another terminal with: python manage.py runserver"
                ) from None
            status = answer_status(body)
            answers[status] += 1
            line = (
                f"{number:>2}. {step.payload['event']:<24} {step.payload['data']['id']}  {step.description}"
                f"  -> {code} {body.strip()[:300]}"
            )
            # A server in deferred mode answers "queued" for anything new; its worker decides
            # later whether the event is processed, stale or ignored. An event sent by an earlier
            # run is a duplicate, whatever it was then.
            if status in (step.expected, "duplicate") or (
                status == "queued" and step.expected != "duplicate"
            ):
                self.stdout.write(line)
            else:
                surprises.append(number)
                self.stdout.write(self.style.ERROR(f"{line}  (expected {step.expected!r})"))
            if code in (401, 403) and number == 1:
                raise CommandError(
                    "The server refused the secret. Pass the server's secret with --secret, or run both "
                    "with the same MORPH_WEBHOOKS_SECRET."
                )

        summary = ", ".join(f"{count} {status}" for status, count in answers.most_common())
        self.stdout.write(f"Sent {len(steps)} events: {summary}.")
        if surprises:
            raise CommandError(f"Unexpected answers to request(s) {', '.join(map(str, surprises))}.")
        admin = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/admin/", "", ""))
        see = f"See the opportunities and their stage history at {admin} ({login_hint()})."
        if answers["queued"]:
            self.stdout.write(
                self.style.WARNING(
                    f"{answers['queued']} events queued, none applied yet: the server runs in deferred "
                    f"mode. Start a worker in another terminal: {worker_command()}"
                )
                + f"; then {see[0].lower()}{see[1:]}"
            )
        elif answers["duplicate"] == len(steps):
            self.stdout.write(
                "Every event was sent before, with the same ids and keys: answered duplicate, as "
                f"Morph's re-sends are, and nothing changed. {see}"
            )
        else:
            self.stdout.write(self.style.SUCCESS("Every answer was as expected.") + f" {see}")
