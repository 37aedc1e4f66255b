"""A made-up CRM for a :class:`~.fake_api.FakeMorphAPI` to serve: a sales pipeline with its stages,
sales reps, companies, their contacts, and deals between them, shaped as Morph's API returns them.
The same ``seed`` gives the same CRM."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from . import reference, resource_event

PIPELINE = "pipeline_sales"
# (id, name, type): the stages of the sales pipeline, in order.
STAGES = [
    ("stage_appointment", "Appointment scheduled", "OPEN"),
    ("stage_qualified", "Qualified to buy", "OPEN"),
    ("stage_presentation", "Presentation scheduled", "OPEN"),
    ("stage_decision", "Decision maker bought-in", "OPEN"),
    ("stage_contract", "Contract sent", "OPEN"),
    ("stage_won", "Closed won", "WON"),
    ("stage_lost", "Closed lost", "LOST"),
]
FIRST_NAMES = [
    "Ada",
    "Bruno",
    "Chloé",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Inès",
    "Jonas",
    "Kemi",
    "Lucas",
]
LAST_NAMES = [
    "Martin",
    "Okafor",
    "Schmidt",
    "Rossi",
    "Nakamura",
    "Dubois",
    "Silva",
    "Novak",
    "Haddad",
    "Larsen",
]
COMPANY_WORDS = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Tyrell",
]
COMPANY_KINDS = ["Industries", "Logistics", "Health", "Foods", "Analytics", "Systems", "Energy", "Partners"]
DEAL_KINDS = ["renewal", "expansion", "pilot", "new licences", "support plan", "migration", "upsell"]
CURRENCIES = ["EUR", "EUR", "EUR", "USD", "USD", "GBP"]
SALES_REPS = 8
COMPANIES = 60
START = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


def fake_crm(opportunities: int = 300, seed: int = 1) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(Morph model, resources) for each model, related ones first."""
    rng = random.Random(seed)

    def moment() -> datetime:
        return START + timedelta(minutes=rng.randrange(60 * 24 * 300))

    def resource(model: str, remote_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        created = moment()
        updated = created + timedelta(minutes=rng.randrange(60 * 24 * 30))
        data: dict[str, Any] = resource_event(
            model, remote_id=remote_id, fields=fields, created_at=created, updated_at=updated
        )["data"]
        return data

    yield (
        "crmPipeline",
        [
            resource(
                "crmPipeline",
                PIPELINE,
                {"name": "Sales", "stages": [reference("crmStage", s) for s, *_ in STAGES]},
            )
        ],
    )
    yield (
        "crmStage",
        [
            resource(
                "crmStage",
                stage,
                {"name": name, "type": kind, "pipeline": reference("crmPipeline", PIPELINE)},
            )
            for stage, name, kind in STAGES
        ],
    )
    reps = []
    for n in range(1, SALES_REPS + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{first}.{last}{n}@example.com".lower().replace("é", "e").replace("è", "e")
        reps.append(
            resource("genericUser", f"user_{n}", {"firstName": first, "lastName": last, "email": email})
        )
    yield "genericUser", reps
    companies = [
        resource(
            "genericCompany",
            f"company_{n}",
            {"name": f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)} {n}"},
        )
        for n in range(1, COMPANIES + 1)
    ]
    yield "genericCompany", companies
    contacts = []
    for n in range(1, COMPANIES + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        contacts.append(
            resource(
                "genericContact",
                f"contact_{n}",
                {
                    "firstName": first,
                    "lastName": last,
                    "email": f"{first[0]}.{last}@company{n}.example".lower(),
                    "phone": f"+33 1 {rng.randrange(10, 100)} {rng.randrange(10, 100)} {rng.randrange(10, 100)}",
                },
            )
        )
    yield "genericContact", contacts
    deals = []
    for n in range(1, opportunities + 1):
        company = rng.randrange(1, COMPANIES + 1)
        company_name = companies[company - 1]["fields"]["name"].rsplit(" ", 1)[0]
        deals.append(
            resource(
                "crmOpportunity",
                f"opp_{n}",
                {
                    "name": f"{company_name} {rng.choice(DEAL_KINDS)}",
                    "amount": rng.randrange(10, 2000) * 50,
                    "currency": rng.choice(CURRENCIES),
                    "stage": reference("crmStage", rng.choice(STAGES)[0]),
                    "pipeline": reference("crmPipeline", PIPELINE),
                    "owner": reference("genericUser", f"user_{rng.randrange(1, SALES_REPS + 1)}"),
                    "contacts": [reference("genericContact", f"contact_{company}")],
                    "companies": [reference("genericCompany", f"company_{company}")],
                    "engagements": [],
                },
            )
        )
    yield "crmOpportunity", deals
