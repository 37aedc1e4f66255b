from __future__ import annotations

from django.urls import path

from .views import HealthView, MetricsView, ReceiveView

app_name = "morph_webhooks"

urlpatterns = [
    path("", ReceiveView.as_view(), name="receive"),
    path("health/", HealthView.as_view(), name="health"),
    path("metrics/", MetricsView.as_view(), name="metrics"),
]
