"""The package's layers, written as import-linter contracts in pyproject.toml (``make lint`` runs
them too): every module imports only layers below its own, no import closes a cycle, lazy ones
included, and no module shadows one of the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "morph_webhooks"


def test_the_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    completed = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "2 kept, 0 broken" in completed.stdout


def test_no_module_shadows_the_standard_library():
    names = {path.stem for path in PACKAGE.rglob("*.py")} | {
        path.name for path in PACKAGE.iterdir() if path.is_dir()
    }
    assert names & set(sys.stdlib_module_names) == set()
