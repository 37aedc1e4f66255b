from __future__ import annotations

from .deliveries import (
    OVERVIEW_FAILURES,
    HTTPStatusFilter,
    IdempotencyKeyAdmin,
    OpportunityAdmin,
    WebhookDeliveryAdmin,
)

__all__ = [
    "OVERVIEW_FAILURES",
    "HTTPStatusFilter",
    "IdempotencyKeyAdmin",
    "OpportunityAdmin",
    "WebhookDeliveryAdmin",
]
