"""The resources behind the ids a mirrored resource holds (an opportunity's stage, pipeline,
owner...), loaded for a whole page at once: one query per referenced model, whatever the page size.

A reference is resolved within its row's connector and owner only: two tenants may use the same
Morph id for different stages, and neither may see the other's names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.db.models import Q

from ..models import MirroredResource, Stage
from ..resources.base import Reference
from ..resources.registry import REGISTRY

# connector_id, owner_id, remote_id: what identifies a mirrored resource.
Key = tuple[str, str, str]
# The attribute of a shown row holding its Related.
ATTRIBUTE = "_morph_related"


@dataclass
class Related:
    """The referenced resources found for a page of rows, by model and key."""

    found: dict[type[MirroredResource], dict[Key, MirroredResource]] = field(default_factory=dict)
    # Whether the names link to the resources: on a change page, not in a list, where a column of
    # links would read as busier than the one link that opens the row.
    link: bool = True

    def get(self, row: MirroredResource, reference: Reference, remote_id: str) -> MirroredResource | None:
        model = REGISTRY[reference.morph_model].model
        return self.found.get(model, {}).get((row.connector_id, row.owner_id, remote_id))


def referenced_ids(row: MirroredResource, reference: Reference) -> list[str]:
    value = getattr(row, reference.column)
    values = value if reference.many and isinstance(value, list) else [value]
    return [remote_id for remote_id in values if isinstance(remote_id, str) and remote_id]


def load_related(
    rows: Sequence[MirroredResource], references: Iterable[Reference], *, link: bool = True
) -> Related:
    """Look up what ``references`` of ``rows`` name, and attach the result to each row."""
    wanted: dict[type[MirroredResource], dict[tuple[str, str], set[str]]] = {}
    for reference in references:
        model = REGISTRY[reference.morph_model].model
        for row in rows:
            ids = referenced_ids(row, reference)
            if ids:
                wanted.setdefault(model, {}).setdefault((row.connector_id, row.owner_id), set()).update(ids)
    related = Related(link=link)
    for model, tenants in wanted.items():
        # One query per model: each tenant's ids matched within that tenant only.
        condition = Q()
        for (connector_id, owner_id), remote_ids in sorted(tenants.items()):
            condition |= Q(connector_id=connector_id, owner_id=owner_id, remote_id__in=sorted(remote_ids))
        related.found[model] = {
            (found.connector_id, found.owner_id, found.remote_id): found
            for found in model._default_manager.filter(condition).defer(
                "raw_resource", "extra_fields", "warnings"
            )
        }
    for row in rows:
        setattr(row, ATTRIBUTE, related)
    return related


def related_of(row: MirroredResource, references: Iterable[Reference]) -> Related:
    """What was loaded for the row's page, or a lookup for this row alone."""
    related = getattr(row, ATTRIBUTE, None)
    if isinstance(related, Related):
        return related
    return load_related([row], references)


def label_of(resource: MirroredResource) -> str:
    """How a referenced resource is named: a stage with its type, since that says won or lost."""
    if isinstance(resource, Stage) and resource.type:
        return f"{resource} ({resource.get_type_display()})"
    return str(resource)
