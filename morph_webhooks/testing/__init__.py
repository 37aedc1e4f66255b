"""Helpers for testing code that receives Morph events, without Morph.

``opportunity_event`` (``engagement_event`` for a call, ``resource_event`` for any Morph model) builds a body shaped like what Morph
really sends; ``morph_headers`` the headers that go with it; ``post_event`` sends both to the
endpoint with Django's test client. :mod:`.fake_api` is a fake of Morph's REST API, served over
real HTTP, for testing a sync.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from django.test import Client
from django.urls import reverse

from ..auth import signature_headers
from ..conf import conf
from ..resources.fields import format_timestamp as timestamp


def reference(model: str, remote_id: str) -> dict[str, str]:
    return {"object": "resourceRef", "model": model, "id": remote_id}


def resource_event(
    model: str,
    action: str = "created",
    remote_id: str = "res_1",
    *,
    fields: dict[str, Any] | None = None,
    updated_at: datetime | str = "2025-03-06T09:15:04.596Z",
    created_at: datetime | str = "2025-03-06T09:05:04.596Z",
    **data: Any,
) -> dict[str, Any]:
    """A ``<model>::<action>`` body, as Morph sends one for any of its models (``crmStage``,
    ``genericContact``...). ``data`` adds or replaces keys of the body's ``data``."""
    return {
        "event": f"{model}::{action}",
        "data": {
            "object": "resource",
            "model": model,
            "id": remote_id,
            "fields": {} if fields is None else fields,
            "createdAt": timestamp(created_at) if isinstance(created_at, datetime) else created_at,
            "updatedAt": timestamp(updated_at) if isinstance(updated_at, datetime) else updated_at,
            "rawResource": None,
            "warnings": [],
            **data,
        },
    }


def opportunity_event(
    action: str = "created",
    remote_id: str = "opp_1",
    *,
    updated_at: datetime | str = "2025-03-06T09:15:04.596Z",
    created_at: datetime | str = "2025-03-06T09:05:04.596Z",
    fields: dict[str, Any] | None = None,
    **data: Any,
) -> dict[str, Any]:
    """A ``crmOpportunity::<action>`` body. ``fields`` replaces the default fields entirely."""
    if fields is None:
        fields = {
            "name": "Acme renewal",
            "amount": 12500,
            "currency": "EUR",
            "stage": reference("crmStage", "stage_qualified"),
            "pipeline": reference("crmPipeline", "pipeline_sales"),
            "owner": reference("genericUser", "user_42"),
            "contacts": [reference("genericContact", "contact_1")],
            "companies": [reference("genericCompany", "company_1")],
            "engagements": [],
        }
    return resource_event(
        "crmOpportunity",
        action,
        remote_id,
        fields=fields,
        updated_at=updated_at,
        created_at=created_at,
        **data,
    )


def engagement_event(
    action: str = "created",
    remote_id: str = "call_1",
    *,
    updated_at: datetime | str = "2025-03-06T09:15:04.596Z",
    created_at: datetime | str = "2025-03-06T09:05:04.596Z",
    fields: dict[str, Any] | None = None,
    **data: Any,
) -> dict[str, Any]:
    """A ``crmEngagement::<action>`` body: by default a completed call about ``opportunity_event``'s
    deal. ``fields`` replaces the default fields entirely."""
    if fields is None:
        fields = {
            "type": "call",
            "direction": "outbound",
            "status": "completed",
            "title": "Renewal call",
            "startedAt": "2025-03-06T09:00:00.000Z",
            "endedAt": "2025-03-06T09:05:00.000Z",
            "duration": 300,
            "owner": reference("genericUser", "user_42"),
            "users": [],
            "contacts": [reference("genericContact", "contact_1")],
            "companies": [reference("genericCompany", "company_1")],
            "opportunities": [reference("crmOpportunity", "opp_1")],
        }
    return resource_event(
        "crmEngagement",
        action,
        remote_id,
        fields=fields,
        updated_at=updated_at,
        created_at=created_at,
        **data,
    )


def morph_headers(
    idempotency_key: str | None = None, connector_id: str = "hubspot", owner_id: str = "tenant_1"
) -> dict[str, str]:
    return {
        "x-conector-id": connector_id,
        "x-owner-id": owner_id,
        "x-idempotency-key": idempotency_key or uuid.uuid4().hex,
    }


def post_event(
    client: Client,
    payload: Any,
    *,
    headers: dict[str, str] | None = None,
    secret: str | None = None,
    signing_secret: str | None = None,
    path: str | None = None,
) -> Any:
    """POST ``payload`` (a dict, or bytes sent as they are) to the endpoint, authenticated as the
    settings require: with ``secret`` or ``signing_secret`` when given, else with the first of
    ``SECRETS`` as a Bearer token, else signed with the first of ``SIGNING_SECRETS``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {**morph_headers(), **(headers or {})}
    if secret is None and signing_secret is None:
        secret = next((secret for secret in conf.SECRETS if secret), None)
        signing_secret = next((secret for secret in conf.SIGNING_SECRETS if secret), None)
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    elif signing_secret:
        headers |= signature_headers(signing_secret, uuid.uuid4().hex, body)
    return client.post(
        path or reverse("morph_webhooks:receive"),
        data=body,
        content_type="application/json",
        headers=headers,
    )
