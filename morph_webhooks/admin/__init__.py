"""The admin for the request log and the mirrored resources, registered on the default site when
``django.contrib.admin`` discovers this module."""

from __future__ import annotations

from django.contrib import admin

from ..models import IdempotencyKey, Opportunity, WebhookDelivery
from .deliveries import WebhookDeliveryAdmin
from .keys import IdempotencyKeyAdmin
from .resources import OpportunityAdmin

admin.site.register(Opportunity, OpportunityAdmin)
admin.site.register(IdempotencyKey, IdempotencyKeyAdmin)
admin.site.register(WebhookDelivery, WebhookDeliveryAdmin)
