"""The documentation site: its reference pages name every setting, check, command, signal and
answer the code declares, it builds strictly, and each file it includes has one source."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from morph_webhooks.conf import DECLARED
from tests.docs_pages import DOCS, ROOT, page


def reference_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = reference_hook()


@pytest.mark.parametrize(
    "name",
    [
        "reference/settings.md",
        "reference/checks.md",
        "reference/commands.md",
        "reference/signals.md",
        "reference/answers.md",
    ],
)
def test_the_reference_page_and_the_code_agree(name: str) -> None:
    assert hook.page_problems(name, page(name)) == []


def test_every_setting_check_and_command_has_its_place_on_the_site() -> None:
    # What the hook compares against, read here independently of it.
    settings_page = page("reference/settings.md")
    headings = re.findall(r"^## (.*)$", settings_page, flags=re.MULTILINE)
    assert sorted(name for name in DECLARED if not any(f"`{name}`" in heading for heading in headings)) == []

    checks_source = (ROOT / "morph_webhooks" / "checks.py").read_text()
    check_ids = set(re.findall(r"morph_webhooks\.[EW]\d{3}", checks_source))
    assert len(check_ids) >= 20
    assert (
        sorted(check_id for check_id in check_ids if f"| `{check_id}` |" not in page("reference/checks.md"))
        == []
    )

    commands = {
        path.stem
        for path in (ROOT / "morph_webhooks" / "management" / "commands").glob("morph_webhooks_*.py")
    }
    assert sorted(name for name in commands if f"## `{name}`" not in page("reference/commands.md")) == []


def test_a_setting_left_out_of_its_page_is_named() -> None:
    without = page("reference/settings.md").replace("## `LOCK_TIMEOUT`", "## Lock timeout")
    assert hook.page_problems("reference/settings.md", without) == [
        "settings page: setting LOCK_TIMEOUT is not on the page"
    ]
    invented = page("reference/checks.md") + "| `morph_webhooks.E999` | made up |\n"
    assert hook.page_problems("reference/checks.md", invented) == [
        "checks page: check morph_webhooks.E999 is on the page but not in the code"
    ]
    gone = page("reference/commands.md").replace("## `morph_webhooks_sweep`", "## Sweeping")
    assert hook.page_problems("reference/commands.md", gone) == [
        "commands page: command morph_webhooks_sweep is not on the page"
    ]


def test_every_signal_is_on_the_signals_page() -> None:
    from django.dispatch import Signal

    from morph_webhooks import signals

    reference = hook.signals_reference()
    declared = [name for name, value in vars(signals).items() if isinstance(value, Signal)]
    assert len(declared) == 27
    assert [name for name in declared if f"`{name}`" not in reference] == []


def test_every_command_option_is_listed_with_its_default() -> None:
    reference = hook.command_reference("morph_webhooks_check")
    assert "| `--wait WAIT` | `30` |" in reference
    assert "| `SITE_URL` | — |" in reference
    assert "--verbosity" not in reference


def test_every_answer_the_endpoint_gives_is_on_its_page() -> None:
    codes = hook.answered_codes()
    assert {
        "invalid_event",
        "not_authenticated",
        "payload_too_large",
        "processing_failed",
        "unavailable",
    } <= codes
    answers = page("reference/answers.md")
    assert sorted(code for code in codes if f'"{code}"' not in answers) == []


@pytest.mark.skipif(
    importlib.util.find_spec("material") is None,
    reason="mkdocs-material needs Python 3.11+: the dev extra leaves it out on 3.10 (CI builds the site on 3.12)",
)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    settings_html = (tmp_path / "site" / "reference" / "settings" / "index.html").read_text()
    assert "a list of strings" in settings_html  # the declarations, written in by the hook
    api_html = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "post_event" in api_html and "webhook_urls" in api_html  # mkdocstrings


def test_the_changelog_and_contributing_pages_include_the_files_at_the_top() -> None:
    # One source each: the pages include the files, and nothing else.
    assert page("changelog.md") == '--8<-- "CHANGELOG.md"\n'
    assert page("contributing.md") == '--8<-- "CONTRIBUTING.md"\n'
    assert not (ROOT / "CHANGELOG.rst").exists()


def test_the_readme_fits_on_two_screens_and_points_at_the_site() -> None:
    readme = page("README.md")
    assert len(readme.splitlines()) <= 150
    for command in ("make run", "make test", "make docs"):
        assert command in readme
    # Every page it links to exists.
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target
