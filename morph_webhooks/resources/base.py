"""What every mirrored Morph resource has: the abstract model and the spec that describes one.

A Morph model (``crmOpportunity``, ``crmStage``...) is mirrored by one module in this package
holding its Django model (a :class:`MirroredResource`), the serializer of its ``data.fields``
(built from the field types of :mod:`.fields`), its signals and a :class:`ResourceSpec` tying
them together; :mod:`.registry` lists the specs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import models
from django.dispatch import Signal
from django.utils.translation import gettext_lazy as _

from ..events import ResourceEvent
from .links import Link
from .relations import Ref

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise
    from rest_framework import serializers

# Morph ids, header values and idempotency keys are opaque strings; 255 is what the view accepts.
ID_LENGTH = 255
# What Morph does to a resource; each sends the signal of the same name.
ACTIONS = ("created", "updated", "deleted")

R = TypeVar("R", bound="MirroredResource")


class ResourceQuerySet(models.QuerySet[R]):
    def alive(self) -> ResourceQuerySet[R]:
        return self.filter(deleted_at__isnull=True)

    def deleted(self) -> ResourceQuerySet[R]:
        return self.filter(deleted_at__isnull=False)


def listed_indexes(prefix: str, *, updated: bool = True) -> list[models.Index]:
    """The indexes a big mirror's admin list needs: its order (newest update in the CRM first) and
    the same within one connection (its connection filter). Without them the list sorts the
    whole table for each page. ``updated=False`` when the model already indexes the update time."""
    by_connection = models.Index(
        fields=["connector_id", "owner_id", "remote_updated_at"], name=f"{prefix}_conn_updated_idx"
    )
    if not updated:
        return [by_connection]
    return [models.Index(fields=["remote_updated_at"], name=f"{prefix}_updated_idx"), by_connection]


class MirroredResource(models.Model):
    """The local copy of one Morph resource, as last described by Morph.

    ``owner_id`` is Morph's connection owner (the tenant); ``remote_id`` is Morph's ``data.id``.
    Together with ``connector_id`` they identify the resource.
    """

    connector_id = models.CharField(_("connector"), max_length=ID_LENGTH)
    owner_id = models.CharField(_("owner (tenant)"), max_length=ID_LENGTH)
    remote_id = models.CharField(max_length=ID_LENGTH)
    # The three above as one column: what relations to this resource join on (see .relations).
    ref = Ref(
        _("reference"), help_text=_("Its connector, owner and Morph id, which relations to it join on.")
    )

    extra_fields = models.JSONField(
        default=dict, blank=True, help_text=_("Fields Morph sent that this model has no column for.")
    )
    raw_resource = models.JSONField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)

    remote_created_at = models.DateTimeField()
    remote_updated_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Only as sure as a scan: Morph listing the resource again restores it, even at the same
    # updatedAt, where Morph's own deleted event would stand.
    deleted_by_sync = models.BooleanField(
        default=False,
        editable=False,
        help_text=_("Deleted because a complete sync did not list it, not by Morph's deleted event."),
    )
    # Marked in the database, one UPDATE per page, rather than held in memory: what lets a sync
    # with --delete-missing tell, in flat memory and across resumed runs, which rows its scan
    # did not return.
    synced_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text=_("When a sync last read it from Morph's API.")
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        constraints = [
            # All three columns are given in every lookup; their order does not matter for uniqueness.
            models.UniqueConstraint(
                fields=["remote_id", "connector_id", "owner_id"],
                name="%(app_label)s_%(class)s_unique_remote",
            ),
            # Implied by the one above; declared because a relation joins to a unique column.
            models.UniqueConstraint(fields=["ref"], name="%(app_label)s_%(class)s_unique_ref"),
        ]

    def __str__(self) -> str:
        # Most Morph models have a name; until it arrives, or for those without one, the id.
        return str(getattr(self, "name", "") or self.remote_id)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True)
class Reference:
    """A column holding the Morph id (or, when ``many``, the list of ids) of another mirrored
    resource: an opportunity's ``stage_id`` names a ``crmStage``. The admin shows the referenced
    resource's name under ``label`` (``name`` is its attribute there) instead of the id."""

    name: str
    column: str
    morph_model: str
    label: StrOrPromise
    many: bool = False


@dataclass(frozen=True)
class ResourceSpec:
    """How one Morph model is mirrored.

    ``fields`` validates ``data.fields``; each of its fields' ``source`` is the column it is
    stored in, and fields it does not declare go to ``extra_fields``. ``signals`` maps each of
    :data:`ACTIONS` to the signal an applied event of that action sends. ``admin_columns`` are the
    model's own columns the admin lists, after the ones every resource has. ``after_apply``, if
    set, runs after an applied event was stored and its signal sent, in the same transaction, with
    the event, the row and the row's values before the event of the columns it changed (empty for
    a row it created). ``references`` are the model's columns that name other mirrored resources;
    ``links`` the lists among them that many-to-many relations read (see :mod:`.links`).
    """

    morph_model: str
    model: type[MirroredResource]
    fields: type[serializers.Serializer[Any]]
    signals: Mapping[str, Signal]
    admin_columns: tuple[str, ...] = ()
    references: tuple[Reference, ...] = ()
    after_apply: Callable[[ResourceEvent, MirroredResource, Mapping[str, Any]], None] | None = None
    links: tuple[Link, ...] = ()
    field_names: frozenset[str] = field(init=False)
    # The Morph model each reference field of ``data.fields`` (``stage``) refers to.
    reference_models: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        assert set(self.signals) == set(ACTIONS), f"{self.morph_model}: a signal for each of {ACTIONS}"
        # Declared fields are a class attribute of DRF serializers; read once, not per event.
        declared = self.fields._declared_fields
        object.__setattr__(self, "field_names", frozenset(declared))
        models_by_column = {reference.column: reference.morph_model for reference in self.references}
        object.__setattr__(
            self,
            "reference_models",
            {
                name: models_by_column[serializer_field.source]
                for name, serializer_field in declared.items()
                if serializer_field.source in models_by_column
            },
        )
