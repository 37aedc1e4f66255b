from __future__ import annotations

from django.apps import AppConfig


class StageHistoryConfig(AppConfig):
    name = "example_project.stage_history"
    label = "stage_history"
    verbose_name = "Stage history"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connecting here (not at import of models) guarantees the receivers are connected exactly
        # once, after every app is loaded, whatever imports what.
        from . import receivers

        receivers.connect()
