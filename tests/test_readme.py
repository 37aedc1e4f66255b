"""The README's Setup, followed literally: its snippets pasted into a project fresh from
``startproject``, then the commands a newcomer runs next."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SECRET = "a-long-random-secret-0123456789abcdef"


def setup_snippets(file_name: str) -> list[str]:
    """The Python blocks of README's Setup section that start with ``# <file_name>``."""
    setup = README.read_text().partition("\n## Setup\n")[2].partition("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", setup, flags=re.DOTALL)
    return [block for block in blocks if block.startswith(f"# {file_name}\n")]


def pasted(snippet: str) -> str:
    # "...," stands for what the list already holds: keep it, as a reader merging by hand would.
    return re.sub(r"^(\w+) = \[\n    \.\.\.,\n", r"\1 = [\n    *\1,\n", snippet, flags=re.MULTILINE).replace(
        "    ...,\n", ""
    )


def run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "MORPH_"))
    }
    environ.update(DJANGO_SETTINGS_MODULE="mysite.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("newcomer")
    created = subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(root)], capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    for file_name in ("settings.py", "urls.py"):
        snippets = setup_snippets(file_name)
        assert snippets, f"README's Setup shows no {file_name} snippet"
        with (root / "mysite" / file_name).open("a") as module:
            module.write("\n" + "\n".join(pasted(snippet) for snippet in snippets))
    return root


def test_without_the_secret_commands_run_and_the_check_says_what_is_missing(project: Path) -> None:
    checked = run(project, "check")

    assert checked.returncode != 0
    assert "Traceback" not in checked.stderr
    assert "morph_webhooks.E001" in checked.stderr


def test_with_the_secret_the_project_checks_and_prints_the_url(project: Path) -> None:
    checked = run(project, "check", "--fail-level", "WARNING", MORPH_WEBHOOKS_SECRET=SECRET)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    printed = run(project, "morph_webhooks_url", "https://example.com", MORPH_WEBHOOKS_SECRET=SECRET)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == f"https://example.com/webhooks/morph/?token={SECRET}"
