"""The tables behind the many-to-many relations: one row per pair a Morph list names.

An opportunity's ``contacts`` list is kept as Morph sent it (``contact_ids``) and, for the
relation ``Opportunity.contacts``, as rows of :class:`OpportunityContact` joining the
opportunity's ref to each contact's (see :mod:`.relations`). A row names its contact by ref
whether or not the contact has arrived: the join finds it once it does. The rows are rewritten
by the event path whenever a newer event changes the list (:class:`Link` says which list feeds
which table), and read through the relations; they are not written otherwise.

Morph lists an opportunity's engagements on both sides (``crmOpportunity.fields.engagements``
and ``crmEngagement.fields.opportunities``). :class:`EngagementOpportunity` keeps one row per
pair, marked with the sides that list it: each side's newest event decides that side's mark, and
the pair goes when neither lists it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models
from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True)
class Link:
    """The list column ``column`` of a resource, kept as rows of ``through``: the row's ref in
    ``through``'s foreign key ``source``, each listed id's ref in its foreign key ``target``.
    When the other side lists pairs of the same table, ``listed_by`` is the boolean field that
    marks the pairs this side lists, ``listed_by_other`` the one marking the other side's."""

    column: str
    through: type[models.Model]
    source: str
    target: str
    listed_by: str | None = None
    listed_by_other: str | None = None


def _end(model: str, column: str, related_name: str = "+", *, source: bool = False) -> models.ForeignKey:  # type: ignore[type-arg]
    """A side of a pair: the ref of a row of ``model``, which need not exist. A source row's pairs
    go with it if it is deleted from the database (Morph's deletes keep it, marked deleted)."""
    return models.ForeignKey(
        f"morph_webhooks.{model}",
        to_field="ref",
        db_column=column,
        db_constraint=False,
        on_delete=models.CASCADE if source else models.DO_NOTHING,
        related_name=related_name,
    )


class OpportunityContact(models.Model):
    opportunity = _end("Opportunity", "opportunity_ref", source=True)
    contact = _end("Contact", "contact_ref")

    class Meta:
        verbose_name = _("contact of an opportunity")
        constraints = [
            models.UniqueConstraint(fields=["opportunity", "contact"], name="morph_opp_contact_unique")
        ]
        indexes = [models.Index(fields=["contact"], name="morph_opp_contact_idx")]


class OpportunityCompany(models.Model):
    opportunity = _end("Opportunity", "opportunity_ref", source=True)
    company = _end("Company", "company_ref")

    class Meta:
        verbose_name = _("company of an opportunity")
        constraints = [
            models.UniqueConstraint(fields=["opportunity", "company"], name="morph_opp_company_unique")
        ]
        indexes = [models.Index(fields=["company"], name="morph_opp_company_idx")]


class EngagementUser(models.Model):
    engagement = _end("Engagement", "engagement_ref", source=True)
    user = _end("CrmUser", "user_ref")

    class Meta:
        verbose_name = _("user of an engagement")
        constraints = [models.UniqueConstraint(fields=["engagement", "user"], name="morph_eng_user_unique")]
        indexes = [models.Index(fields=["user"], name="morph_eng_user_idx")]


class EngagementCompany(models.Model):
    engagement = _end("Engagement", "engagement_ref", source=True)
    company = _end("Company", "company_ref")

    class Meta:
        verbose_name = _("company of an engagement")
        constraints = [
            models.UniqueConstraint(fields=["engagement", "company"], name="morph_eng_company_unique")
        ]
        indexes = [models.Index(fields=["company"], name="morph_eng_company_idx")]


class EngagementContact(models.Model):
    engagement = _end("Engagement", "engagement_ref", source=True)
    contact = _end("Contact", "contact_ref")

    class Meta:
        verbose_name = _("contact of an engagement")
        constraints = [
            models.UniqueConstraint(fields=["engagement", "contact"], name="morph_eng_contact_unique")
        ]
        indexes = [models.Index(fields=["contact"], name="morph_eng_contact_idx")]


class EngagementOpportunity(models.Model):
    # Either side's row may be deleted from the database while the other still lists the pair.
    engagement = _end("Engagement", "engagement_ref")
    opportunity = _end("Opportunity", "opportunity_ref")
    listed_by_engagement = models.BooleanField(default=False)
    listed_by_opportunity = models.BooleanField(default=False)

    class Meta:
        verbose_name = _("opportunity of an engagement")
        constraints = [
            models.UniqueConstraint(fields=["engagement", "opportunity"], name="morph_eng_opp_unique")
        ]
        indexes = [models.Index(fields=["opportunity"], name="morph_eng_opp_idx")]
