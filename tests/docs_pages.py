"""The documentation's pages as the tests read them: what a user copies from them is run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Files kept at the top of the repository, where people look for them.
TOP = ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")


def page(name: str) -> str:
    """A page of the site (``guides/signals.md``), or a file at the top (``README.md``)."""
    return (ROOT / name if name in TOP else DOCS / name).read_text()


def section(text: str, heading: str) -> str:
    """The section under ``heading`` (its ``#`` marks included), up to the next of its level."""
    level = heading.split(" ")[0]
    body = text.partition(f"\n{heading}\n")[2]
    assert body, f"no section {heading!r}"
    return re.split(rf"\n{level} ", body)[0]


def pages() -> list[str]:
    """Every page a user reads: the site's and the files at the top."""
    return [*TOP, *sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))]


def blocks(text: str, language: str = "python") -> list[str]:
    """The fenced code blocks of one language, dedented when set in a list item."""
    found = re.findall(rf"^( *)```{language}\n(.*?)^\1```", text, flags=re.DOTALL | re.MULTILINE)
    return [re.sub(rf"^{indent}", "", block, flags=re.MULTILINE) for indent, block in found]
