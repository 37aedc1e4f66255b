"""The package's modules import one another one way, lazy imports included, and none shadows a
module of the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "morph_webhooks"
# The request path, reprocessing, the workers and the tasks.
ONE_WAY = {
    "views",
    "intake",
    "reprocess",
    "apply",
    "store",
    "statements",
    "deferred",
    "tasks",
    "sweeper",
    "sync_queue",
    "worker",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports, wherever in it."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # "from . import statements" imports a module; "from .models import X" a name.
                targets = [f"{base}.{alias.name}" for alias in node.names]
                imported.update(target for target in targets if target in modules)
                if base in modules and not any(target in modules for target in targets):
                    imported.add(base)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name in modules)
        graph[name] = imported - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The modules that import one another, directly or not, in groups (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(group)

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_the_delivery_path_is_in_no_import_cycle():
    path = {f"morph_webhooks.{name}" for name in ONE_WAY}
    assert path <= set(imports())
    assert [group for group in cycles(imports()) if group & path] == []


def test_no_module_shadows_the_standard_library():
    names = {path.stem for path in PACKAGE.rglob("*.py")} | {
        path.name for path in PACKAGE.iterdir() if path.is_dir()
    }
    assert names & set(sys.stdlib_module_names) == set()
