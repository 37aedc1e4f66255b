from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from .views import HealthView, MetricsView, ReceiveView

app_name = "morph_webhooks"

urlpatterns = [
    path("", ReceiveView.as_view(), name="receive"),
    path("health/", HealthView.as_view(), name="health"),
    path("metrics/", MetricsView.as_view(), name="metrics"),
]


def webhook_urls(route: str = "webhooks/morph/") -> list[URLPattern | URLResolver]:
    """The app's URLs at ``route``, for a project's ``urlpatterns``; Morph's endpoint answers there
    with and without its trailing slash. A URL pasted in Morph without it would otherwise meet
    APPEND_SLASH: a 301 that turns Morph's POST into a GET (the event is lost), or with DEBUG on
    a RuntimeError. ``route`` may be written with or without its slash: the app's other URLs
    (``health/``, ``metrics/``) go below it either way."""
    bare = route.rstrip("/")
    if not bare:
        return [path("", include("morph_webhooks.urls"))]
    return [
        path(f"{bare}/", include("morph_webhooks.urls")),
        # Unnamed: reverse("morph_webhooks:receive") keeps giving the spelling with the slash.
        path(bare, ReceiveView.as_view()),
    ]
