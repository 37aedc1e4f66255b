"""The example project's URLs plus the two yardsticks."""

from __future__ import annotations

from django.urls import path

from example_project.urls import urlpatterns as example_urlpatterns

from .yardsticks import bare, naive

urlpatterns = [
    *example_urlpatterns,
    path("bench/bare/", bare, name="bench-bare"),
    path("bench/naive/", naive, name="bench-naive"),
]
