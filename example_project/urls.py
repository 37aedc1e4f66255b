from __future__ import annotations

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from morph_webhooks.urls import webhook_urls

urlpatterns = [
    # The admin is where the example's results are seen, so the site's root leads there.
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    # Point Morph at https://<your host>/webhooks/morph/?token=<MORPH_WEBHOOKS_SECRET>.
    # Morph may be given it without the trailing slash: both spellings are answered.
    *webhook_urls("webhooks/morph/"),
]
