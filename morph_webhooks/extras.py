"""The optional dependencies: what the app says when one is missing. Each comes with an extra of
the package (``pyproject.toml``), installed from a checkout as docs/getting-started/install.md shows."""

from __future__ import annotations


def install(extra: str) -> str:
    """The command that installs the app with ``extra``."""
    return f"pip install '/path/to/morph-webhooks[{extra}]'"


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it.
    Commands answer it as a CommandError, not a traceback."""

    def __init__(self, needed_by: str, package: str, extra: str) -> None:
        super().__init__(f"{needed_by} needs {package}: {install(extra)}")
