from __future__ import annotations

from django.db import models


class SignalRecord(models.Model):
    """One morph_webhooks signal as a receiver saw it.

    Deliberately no unique constraint on the key: a signal sent twice for one event must show up
    as two rows to be counted, not as an IntegrityError that would roll the second one back.
    """

    signal = models.CharField(max_length=32)
    connector_id = models.CharField(max_length=255)
    owner_id = models.CharField(max_length=255)
    idempotency_key = models.CharField(max_length=255)
    remote_id = models.CharField(max_length=255)
    remote_updated_at = models.DateTimeField()
    created = models.BooleanField(help_text="The signal's `created` argument.")
    opportunity_pk = models.BigIntegerField()
    # The documentation promises the signal is sent inside the transaction that applies the event.
    in_atomic_block = models.BooleanField()
    worker_pid = models.IntegerField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["connector_id", "owner_id", "idempotency_key"], name="soak_signal_key_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.signal} {self.idempotency_key}"
