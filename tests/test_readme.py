"""The setup page (and the README's minimal setup), followed literally: its snippets pasted into a
project fresh from ``startproject``, then the commands a newcomer runs next."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from morph_webhooks.testing import morph_headers, opportunity_event
from tests.docs_pages import ROOT, blocks, page, pages, section
from tests.helpers import free_port

SETUP = page("getting-started/setup.md")
SECRET = "a-long-random-secret-0123456789abcdef"


def setup_snippets(file_name: str, text: str = SETUP) -> list[str]:
    """The Python blocks of a page that start with ``# <file_name>``."""
    return [block for block in blocks(text) if block.startswith(f"# {file_name}\n")]


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
        assert snippets, f"The setup page shows no {file_name} snippet"
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


def extras() -> dict[str, list[str]]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest's own dependency
        import tomli as tomllib
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(pyproject["project"]["optional-dependencies"])


def test_every_install_command_is_the_checkouts_and_names_an_extra_the_package_has() -> None:
    text = "\n".join(page(name) for name in pages())
    commands = re.findall(r"pip install ([^`\n#]*?)\s*(?:`|#|\n)", text)
    ours = [command for command in commands if "morph-webhooks" in command]
    # The package is not on PyPI: each command installs the checkout, with an extra or without.
    shapes = [
        re.fullmatch(r"(?:'/path/to/morph-webhooks\[([\w,-]+)\]'|/path/to/morph-webhooks)", c) for c in ours
    ]
    assert all(shapes), ours
    named = {extra for shape in shapes if shape and shape[1] for extra in shape[1].split(",")}
    assert named <= extras().keys()
    assert {"sync", "metrics", "tasks-db", "tasks-rq", "testing"} <= named


def test_the_rq_extra_brings_the_rq_backend_and_the_readme_installs_django_rq() -> None:
    assert any(requirement.startswith("django-tasks-rq") for requirement in extras()["tasks-rq"])
    deferred = page("guides/deferred.md")
    # rqworker is django-rq's command: it exists only with its app installed.
    assert 'INSTALLED_APPS += ["django_rq"]' in deferred


def test_runserver_logs_the_endpoints_requests_without_the_secret(project: Path, tmp_path: Path) -> None:
    # Only the Setup's snippets: no LOGGING, so runserver's request lines go to Django's defaults.
    migrated = run(project, "migrate", "--no-input", MORPH_WEBHOOKS_SECRET=SECRET)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    environ = {
        name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "MORPH_"))
    }
    environ.update(DJANGO_SETTINGS_MODULE="mysite.settings", MORPH_WEBHOOKS_SECRET=SECRET)
    log_path = tmp_path / "runserver.log"
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=project,
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        body = json.dumps(opportunity_event()).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhooks/morph/?token={SECRET}",
            data=body,
            headers={"Content-Type": "application/json", **morph_headers("runserver-1")},
            method="POST",
        )
        answer = post_when_listening(request)
        # runserver writes its request line once the answer is sent.
        deadline = time.monotonic() + 10
        while "HTTP/1.1" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=10)
    log = log_path.read_text()

    assert answer == {"status": "processed"}
    assert '"POST /webhooks/morph/?token=[redacted] HTTP/1.1" 200' in log, log
    assert SECRET not in log


def post_when_listening(request: urllib.request.Request) -> Any:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_quickstarts_worker_runs_in_deferred_mode_as_the_server_does() -> None:
    # The example reads PROCESSING from the environment: a worker started without the variable
    # would take itself for sync mode, and give up on a failed event at its first attempt.
    quickstart = section(page("getting-started/example-project.md"), "## Run it")
    commands = re.findall(r"`([^`]*manage\.py (?:db_worker|morph_webhooks_worker)[^`]*)`", quickstart)
    assert commands
    assert all(command.startswith("MORPH_WEBHOOKS_PROCESSING=deferred ") for command in commands), commands


def test_the_readmes_minimal_setup_is_the_setup_pages() -> None:
    # The README shows the same snippets as the page the tests above paste.
    for file_name in ("settings.py", "urls.py"):
        assert setup_snippets(file_name, page("README.md")) == setup_snippets(file_name)
