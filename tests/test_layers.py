"""Who may import whom: the event types are a leaf every layer uses, the resources (models and
their field types) sit below the parser, and no import, a function's included, closes a cycle
through them. Imports under ``if TYPE_CHECKING`` are left out: they never run."""

from __future__ import annotations

import grimp
import pytest

PACKAGE = "morph_webhooks"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=True, cache_dir=None)


def imported_by(graph: grimp.ImportGraph, module: str) -> set[str]:
    return graph.find_modules_directly_imported_by(f"{PACKAGE}.{module}")


def test_the_event_types_import_nothing_of_the_package(graph):
    assert imported_by(graph, "events") == set()
    assert imported_by(graph, "text") == set()


def test_the_resources_import_no_layer_above_them(graph):
    allowed = {f"{PACKAGE}.{name}" for name in ("events", "signals", "text")}
    resources = graph.find_descendants(f"{PACKAGE}.resources")
    for module in resources:
        assert graph.find_modules_directly_imported_by(module) <= resources | allowed, module


def test_the_resources_import_the_event_type_they_apply(graph):
    # A leaf closes no cycle: nothing needs hiding behind TYPE_CHECKING or inside a function.
    assert graph.direct_import_exists(importer=f"{PACKAGE}.resources.base", imported=f"{PACKAGE}.events")


def test_only_the_parser_uses_its_serializers(graph):
    assert graph.find_modules_that_directly_import(f"{PACKAGE}.serializers") == {f"{PACKAGE}.parsing"}


@pytest.mark.parametrize("module", ["events", "text", "parsing", "serializers", "resources"])
def test_no_cycle_through(graph, module):
    name = f"{PACKAGE}.{module}"
    for start in {name} | graph.find_descendants(name):
        for imported in graph.find_modules_directly_imported_by(start):
            chain = graph.find_shortest_chain(imported, start)
            assert chain is None, f"{start} -> {' -> '.join(chain or ())}"
