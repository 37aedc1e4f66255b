from __future__ import annotations

from django.db import models

from morph_webhooks.models import ID_LENGTH, Opportunity

# What a deletion is recorded as: not a stage of any CRM, so it can never be mistaken for one, and
# a later restore (a newer update) shows up as a change from "(deleted)" back to a real stage.
DELETED = "(deleted)"


class StageChange(models.Model):
    """One move of an opportunity from one stage to another, as the CRM reported it."""

    opportunity = models.ForeignKey(Opportunity, on_delete=models.CASCADE, related_name="stage_changes")
    # Empty for the first change recorded for an opportunity: there was no stage before it.
    from_stage_id = models.CharField(max_length=ID_LENGTH, blank=True)
    to_stage_id = models.CharField(max_length=ID_LENGTH, blank=True)
    event = models.CharField(max_length=ID_LENGTH, help_text="The Morph event type that carried the change.")
    changed_at = models.DateTimeField(help_text="When the CRM changed the opportunity (Morph's updatedAt).")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at", "-pk"]
        indexes = [models.Index(fields=["to_stage_id"], name="stage_change_to_stage_idx")]

    def __str__(self) -> str:
        return f"{self.opportunity}: {self.from_stage_id or '-'} -> {self.to_stage_id or '-'}"
