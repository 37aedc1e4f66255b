"""The two tables a hand-written receiver needs: the keys it has seen, and the opportunities."""

from __future__ import annotations

from django.db import models


class SeenKey(models.Model):
    # A plain unique key: what get_or_create relies on to answer a re-delivery.
    key = models.CharField(max_length=255, unique=True)
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class Deal(models.Model):
    remote_id = models.CharField(max_length=255, unique=True)
    name = models.CharField(max_length=250, blank=True, default="")
    amount = models.DecimalField(max_digits=24, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, default="")
    stage_id = models.CharField(max_length=255, blank=True, default="")
    remote_updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name or self.remote_id
