from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class MorphWebhooksConfig(AppConfig):
    name = "morph_webhooks"
    verbose_name = "Morph webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .alerts import mail_admins_on_failure
        from .checks import check_search_extension, check_settings, check_sqlite_version
        from .redaction import mask_request_loggers
        from .signals import delivery_failed

        checks.register(check_settings, checks.Tags.security)
        checks.register(check_sqlite_version, checks.Tags.compatibility)
        checks.register(check_search_extension, checks.Tags.database)
        # Does nothing unless MAIL_ADMINS_ON_FAILURE is on, read at each death.
        delivery_failed.connect(mail_admins_on_failure, dispatch_uid="morph_webhooks_mail_admins_on_failure")
        # Logging is configured by now (django.setup() does it before the apps are ready).
        mask_request_loggers()
