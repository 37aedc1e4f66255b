from __future__ import annotations

from django.apps import AppConfig


class SignalLogConfig(AppConfig):
    name = "soak.signal_log"
    label = "soak_signal_log"
    verbose_name = "Soak test signal log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers

        receivers.connect()
