from __future__ import annotations

from django.apps import AppConfig


class NaiveConfig(AppConfig):
    name = "benchmarks.naive"
    label = "bench_naive"
    verbose_name = "Benchmark: hand-written receiver"
    default_auto_field = "django.db.models.BigAutoField"
