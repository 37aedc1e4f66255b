"""The two yardsticks the app is measured against, served by the same project and middleware.

- :func:`bare`: answers 200 and does nothing, the most this stack (gunicorn, Django, the
  example's middleware) can serve.
- :func:`naive`: a receiver as a user would write it without morph_webhooks: ``json.loads``,
  ``get_or_create`` on the key, ``update_or_create`` on the row. No validation, no ordering by
  ``updatedAt``, no request log, no transaction around the two writes.
"""

from __future__ import annotations

import hmac
import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .naive.models import Deal, SeenKey


@csrf_exempt
def bare(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"{}", content_type="application/json")


@csrf_exempt
def naive(request: HttpRequest) -> HttpResponse:
    # The one check nobody leaves out; it costs microseconds, so it does not tilt the comparison.
    token = request.GET.get("token", "")
    if not any(hmac.compare_digest(token, secret) for secret in settings.MORPH_WEBHOOKS["SECRETS"]):
        return JsonResponse({"error": "forbidden"}, status=403)
    payload = json.loads(request.body)
    _, created = SeenKey.objects.get_or_create(key=request.headers["x-idempotency-key"])
    if not created:
        return JsonResponse({"status": "duplicate"})
    data = payload["data"]
    fields = data.get("fields") or {}
    Deal.objects.update_or_create(
        remote_id=data["id"],
        defaults={
            "name": fields.get("name") or "",
            "amount": fields.get("amount"),
            "currency": fields.get("currency") or "",
            "stage_id": (fields.get("stage") or {}).get("id", ""),
            "remote_updated_at": data["updatedAt"],
        },
    )
    return JsonResponse({"status": "processed"})
