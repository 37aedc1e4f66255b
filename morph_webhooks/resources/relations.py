"""Relations between mirrored resources that stay within one connection (one tenant).

A Morph id means something within its connection only: two tenants' CRMs may both hold a stage
``"1"``. So a relation joins on the connection too, and, to stay a relation Django handles like
any other (``select_related``, ``exclude``, ``Count``, ``prefetch_related``), it joins on one
column: a row's :class:`Ref`, its connector, owner and Morph id written as one string
(:func:`tenant_ref`). A row referring to a stage keeps the stage's Morph id (``stage_id``) and,
beside it, the ref that id names in the row's connection (``stage_ref``), from which the relation
(``stage``) joins to the stages' own refs.

Nothing needs to exist on the other side: events arrive in any order, so a reference may name a
row that has not arrived yet, or never will. The join then finds nothing (``deal.stage`` is None)
until the row arrives, and no key needs resolving when it does. Both columns are computed from
the row's other columns whenever it is saved (``pre_save``), by the ORM or by the event path's
own statements alike.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor

# Three ids of up to ID_LENGTH (255) characters each, their lengths and separators.
REF_LENGTH = 800


def tenant_ref(connector_id: str, owner_id: str, remote_id: str) -> str:
    """The one string that names a resource among every connection's: ``7:hubspot|5:acme1|42``.

    The lengths make it unambiguous whatever the ids hold (``"a|" + "b"`` and ``"a" + "|b"``
    differ); :data:`SQL_REF` is the same function in SQL, for migrations."""
    return f"{len(connector_id)}:{connector_id}|{len(owner_id)}:{owner_id}|{remote_id}"


# tenant_ref() in SQL that PostgreSQL and SQLite both run (LENGTH counts characters on both, as
# len() does), over the columns named by the format's fields.
SQL_REF = (
    "CAST(LENGTH({connector}) AS TEXT) || ':' || {connector} || '|' || "
    "CAST(LENGTH({owner}) AS TEXT) || ':' || {owner} || '|' || {remote}"
)


class Ref(models.CharField):  # type: ignore[type-arg]
    """The :func:`tenant_ref` of the row's connection and of its attribute ``source``: the row's
    own Morph id (``remote_id``) for the ref a relation joins to, or a reference's (``stage_id``)
    for the one it joins from. Null when ``source`` is empty (no reference). Computed when the row
    is saved; never edited."""

    def __init__(self, *args: Any, source: str = "remote_id", **kwargs: Any) -> None:
        self.source = source
        kwargs.update(max_length=REF_LENGTH, null=True, blank=True, editable=False)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        for fixed in ("max_length", "null", "blank", "editable"):
            kwargs.pop(fixed, None)
        if self.source != "remote_id":
            kwargs["source"] = self.source
        return name, path, args, kwargs

    def ref_of(self, instance: models.Model) -> str | None:
        morph_id = getattr(instance, self.source)
        if not morph_id:
            return None
        return tenant_ref(instance.connector_id, instance.owner_id, morph_id)  # type: ignore[attr-defined]

    def pre_save(self, model_instance: models.Model, add: bool) -> str | None:
        ref = self.ref_of(model_instance)
        setattr(model_instance, self.attname, ref)
        return ref


class ReferenceDescriptor(ForwardManyToOneDescriptor):  # type: ignore[type-arg]
    """``deal.stage``: the row the Morph id (``deal.stage_id``) names in the deal's connection,
    deleted or not, or None when there is none (yet).

    Read from the id as it is now, not from the stored ref: changing ``deal.stage_id`` in memory
    changes what ``deal.stage`` returns, before the deal is saved. A row already at hand
    (``select_related``, ``prefetch_related``, or read before) is reused while it is still the
    one the id names."""

    field: MirrorReference

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        morph_id = getattr(instance, self.field.morph_id)
        if not morph_id:
            return None
        try:
            known = self.field.get_cached_value(instance)
        except KeyError:
            pass
        else:
            if self._still_named(instance, known, morph_id):
                return known
        target = self.field.related_model._base_manager.db_manager(hints={"instance": instance})
        found = target.filter(
            connector_id=instance.connector_id, owner_id=instance.owner_id, remote_id=morph_id
        ).first()
        self.field.set_cached_value(instance, found)
        return found

    def _still_named(self, instance: Any, known: Any, morph_id: str) -> bool:
        if known is None:
            # Found missing by a join on the stored ref: still so while the id names that ref.
            stored = getattr(instance, self.field.ref_field.attname)
            return bool(stored == tenant_ref(instance.connector_id, instance.owner_id, morph_id))
        return bool(
            (known.remote_id, known.connector_id, known.owner_id)
            == (morph_id, instance.connector_id, instance.owner_id)
        )

    def __set__(self, instance: Any, value: Any) -> None:
        """``deal.stage = stage`` sets ``deal.stage_id``; a row of another connection is refused."""
        if value is not None:
            if not isinstance(value, self.field.related_model):
                raise ValueError(f"{self.field.name} must be a {self.field.related_model.__name__} or None.")
            if (getattr(value, "connector_id", None), getattr(value, "owner_id", None)) != (
                instance.connector_id,
                instance.owner_id,
            ):
                raise ValueError(f"{value!r} belongs to another connection than {instance!r}.")
        setattr(instance, self.field.morph_id, "" if value is None else value.remote_id)
        self.field.set_cached_value(instance, value)


class MirrorReference(models.ForeignObject):  # type: ignore[type-arg]
    """A reference to one resource of the same connection: ``stage`` over the Morph id
    ``stage_id`` and its ref ``stage_ref`` (a :class:`Ref` with ``source="stage_id"``), joining to
    the target's ``ref``. Read-only: the Morph id is what is written. Never a database constraint:
    the target may not have arrived."""

    forward_related_accessor_class = ReferenceDescriptor
    # No column, so no constraint: said so for the schema editors that ask any relation (SQLite's,
    # removing the field when the migration is reversed).
    db_constraint = False

    def __init__(
        self, to: Any, *, morph_id: str, ref: str, related_name: str, verbose_name: Any = None, **kwargs: Any
    ) -> None:
        self.morph_id = morph_id
        kwargs.update(
            on_delete=models.DO_NOTHING,
            from_fields=[ref],
            to_fields=["ref"],
            null=True,
            blank=True,
            editable=False,
            related_name=related_name,
            verbose_name=verbose_name,
        )
        super().__init__(to, **kwargs)

    @property
    def ref_field(self) -> Ref:
        field = self.model._meta.get_field(self.from_fields[0])
        assert isinstance(field, Ref)
        return field

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        for fixed in ("on_delete", "from_fields", "to_fields", "null", "blank", "editable"):
            kwargs.pop(fixed, None)
        kwargs.update(morph_id=self.morph_id, ref=self.from_fields[0])
        return name, path, args, kwargs
