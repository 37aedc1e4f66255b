"""Morph model name -> :class:`~.base.ResourceSpec`, for every Morph model the app mirrors.

Events for models not listed here are acknowledged as ``ignored``. Mirroring another Morph model
takes a module beside :mod:`.opportunity`, its line below, its signals in
:mod:`morph_webhooks.signals`, its model's name in :mod:`morph_webhooks.models` and a migration.
"""

from __future__ import annotations

from . import company, contact, engagement, opportunity, pipeline, stage, user, workspace
from .base import ResourceSpec

REGISTRY: dict[str, ResourceSpec] = {
    spec.morph_model: spec
    for spec in (
        # Related models first: a sync reads them before the opportunities and engagements that refer
        # to them.
        pipeline.SPEC,
        stage.SPEC,
        user.SPEC,
        company.SPEC,
        contact.SPEC,
        opportunity.SPEC,
        engagement.SPEC,
        workspace.SPEC,
    )
}

# The same specs by Django model: for code that holds a row rather than an event.
SPECS_BY_MODEL: dict[type, ResourceSpec] = {spec.model: spec for spec in REGISTRY.values()}
