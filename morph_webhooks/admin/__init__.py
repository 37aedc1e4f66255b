"""The admin for the request log and the mirrored resources, registered on the default site when
``django.contrib.admin`` discovers this module."""

from __future__ import annotations

from django.contrib import admin

from ..models import Connection, Engagement, IdempotencyKey, Opportunity, WebhookDelivery
from ..resources.registry import REGISTRY
from .connections import ConnectionAdmin
from .deliveries import WebhookDeliveryAdmin
from .keys import IdempotencyKeyAdmin
from .resources import EngagementAdmin, OpportunityAdmin, resource_admin

OWN_ADMINS = {Opportunity: OpportunityAdmin, Engagement: EngagementAdmin}
# Every other mirrored model gets the admin its spec describes.
for spec in REGISTRY.values():
    admin.site.register(spec.model, OWN_ADMINS.get(spec.model) or resource_admin(spec))
admin.site.register(IdempotencyKey, IdempotencyKeyAdmin)
admin.site.register(WebhookDelivery, WebhookDeliveryAdmin)
admin.site.register(Connection, ConnectionAdmin)
