from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class MorphWebhooksConfig(AppConfig):
    name = "morph_webhooks"
    verbose_name = "Morph webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import check_settings

        checks.register(check_settings, checks.Tags.security)
