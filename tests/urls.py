from __future__ import annotations

from django.contrib import admin
from django.urls import path

from morph_webhooks.urls import webhook_urls

urlpatterns = [
    path("admin/", admin.site.urls),
    *webhook_urls("webhooks/morph/"),
]
