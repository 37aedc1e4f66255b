"""The reference pages, completed from the code when the site is built.

Each page keeps the prose a reader needs; what the code declares (a setting's type, default and
range, a check's level and message, a command's options and defaults, the signals and their
arguments, the error codes the endpoint answers) is read from the code and written into the page
here, so that it cannot drift. A declaration the page leaves out, or a name on the page the code
does not declare, stops the build (``PluginError``); ``tests/test_docs.py`` asks the same
questions without building the site.
"""

from __future__ import annotations

import argparse
import ast
import pkgutil
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "morph_webhooks"

# Options every Django command has; the reference lists each command's own.
DJANGO_OPTIONS = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


class ReferenceError(Exception):
    """A reference page and the code disagree on what exists."""


def setup_django() -> None:
    """The app's modules import models: Django must be set up, with no database needed."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=[
                "django.contrib.admin",
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "django.contrib.sessions",
                "django.contrib.messages",
                "rest_framework",
                "morph_webhooks",
            ],
            USE_TZ=True,
        )
        django.setup()


def plain(text: str) -> str:
    """Markdown from the reStructuredText spans the code's comments use."""
    text = re.sub(r":\w+:`~[\w.]*?\.?(\w+)`", r"`\1`", text)
    text = re.sub(r":\w+:`([\w.]+)`", r"`\1`", text)
    return text.replace("``", "`")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def mismatch(page: str, what: str, missing: Iterable[str], unknown: Iterable[str]) -> list[str]:
    problems = [f"{page}: {what} {name} is not on the page" for name in sorted(missing)]
    return problems + [
        f"{page}: {what} {name} is on the page but not in the code" for name in sorted(unknown)
    ]


# Settings ---------------------------------------------------------------------------------------

SETTING_HEADING = re.compile(r"^## (`[A-Z_]+`(?: / `[A-Z_]+`)*)$", re.MULTILINE)


def shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def setting_facts(name: str) -> str:
    from morph_webhooks.conf import DECLARED

    declaration = DECLARED[name]
    if declaration.choices:
        allowed = " or ".join(shown(choice) for choice in declaration.choices)
    elif declaration.minimum is not None:
        allowed = f"at least {declaration.minimum:g}"
    elif declaration.above is not None:
        allowed = f"above {declaration.above:g}"
    else:
        allowed = "any"
    secret = "; never shown in a message" if declaration.secret else ""
    return f"| `{name}` | {cell(declaration.kind.description)} | {shown(declaration.default)} | {allowed}{secret} |"


def settings_on_page(markdown: str) -> list[str]:
    return [name for heading in SETTING_HEADING.findall(markdown) for name in re.findall(r"`(\w+)`", heading)]


def settings_problems(markdown: str) -> list[str]:
    from morph_webhooks.conf import DECLARED

    named = settings_on_page(markdown)
    twice = sorted({name for name in named if named.count(name) > 1})
    problems = [f"settings page: {name} has more than one heading" for name in twice]
    return problems + mismatch(
        "settings page", "setting", DECLARED.keys() - set(named), set(named) - DECLARED.keys()
    )


def complete_settings(markdown: str) -> str:
    def facts(match: re.Match[str]) -> str:
        rows = [setting_facts(name) for name in re.findall(r"`(\w+)`", match[1])]
        return f"{match[0]}\n\n| Setting | Type | Default | Allowed |\n|---|---|---|---|\n" + "\n".join(rows)

    return SETTING_HEADING.sub(facts, markdown)


# System checks ----------------------------------------------------------------------------------

CHECK_ROW = re.compile(r"^\| `(morph_webhooks\.[EW]\d{3})` \| (.*) \|$", re.MULTILINE)


def declared_check_ids() -> set[str]:
    return set(re.findall(r"morph_webhooks\.[EW]\d{3}", (PACKAGE / "checks.py").read_text()))


def check_messages() -> dict[str, str]:
    """Each check's message as checks.py writes it, where it is written in place (values it
    fills in shown as …)."""
    messages: dict[str, str] = {}
    for node in ast.walk(ast.parse((PACKAGE / "checks.py").read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
            continue
        ids = [k.value for k in node.keywords if k.arg == "id" and isinstance(k.value, ast.Constant)]
        if node.func.id not in ("Error", "Warning") or not ids:
            continue
        message = node.args[0]
        if isinstance(message, ast.Constant) and isinstance(message.value, str):
            messages[ids[0].value] = message.value
        elif isinstance(message, ast.JoinedStr):
            messages[ids[0].value] = "".join(
                part.value if isinstance(part, ast.Constant) else "…" for part in message.values
            )
    return messages


def checks_problems(markdown: str) -> list[str]:
    on_page = {check_id for check_id, _ in CHECK_ROW.findall(markdown)}
    code = declared_check_ids()
    return mismatch("checks page", "check", code - on_page, on_page - code)


def complete_checks(markdown: str) -> str:
    messages = check_messages()
    rows = [
        f"| `{check_id}` | {'Error' if '.E' in check_id else 'Warning'} | {meaning} | "
        f"{cell(messages[check_id]) if check_id in messages else '—'} |"
        for check_id, meaning in CHECK_ROW.findall(markdown)
    ]
    table = "| Id | Level | Meaning | Message |\n|---|---|---|---|\n" + "\n".join(rows)
    return re.sub(
        r"^\| Id \| Meaning \|\n\|---\|---\|\n(?:\|.*\|\n?)+", table + "\n", markdown, flags=re.MULTILINE
    )


# Management commands ----------------------------------------------------------------------------

COMMAND_HEADING = re.compile(r"^## `(morph_webhooks_\w+)`$", re.MULTILINE)


def declared_commands() -> list[str]:
    from morph_webhooks.management import commands

    return [
        module.name for module in pkgutil.iter_modules(commands.__path__) if not module.name.startswith("_")
    ]


def command_options(name: str) -> tuple[str, list[argparse.Action]]:
    setup_django()
    from django.core.management import load_command_class

    command = load_command_class("morph_webhooks", name)
    parser = command.create_parser("manage.py", name)
    return str(command.help), [action for action in parser._actions if action.dest not in DJANGO_OPTIONS]


def option_name(action: argparse.Action) -> str:
    metavar = action.metavar or action.dest.upper()
    if not action.option_strings:
        return f"`{metavar}...`" if action.nargs in ("*", "+") else f"`{metavar}`"
    value = "" if action.nargs == 0 else f" {metavar}"
    return ", ".join(f"`{option}{value}`" for option in action.option_strings)


def option_default(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "off"
    if action.default in (None, [], argparse.SUPPRESS):
        return "—"
    return f"`{action.default}`"


def command_reference(name: str) -> str:
    help_text, actions = command_options(name)
    rows = [
        f"| {option_name(action)} | {option_default(action)} | "
        f"{cell((action.help or '') % {'default': action.default})} |"
        for action in actions
    ]
    table = (
        "| Option | Default | What it does |\n|---|---|---|\n" + "\n".join(rows) if rows else "No options."
    )
    return f"`python manage.py {name}`: {help_text}\n\n{table}"


def commands_problems(markdown: str) -> list[str]:
    on_page = set(COMMAND_HEADING.findall(markdown))
    code = set(declared_commands())
    return mismatch("commands page", "command", code - on_page, on_page - code)


def complete_commands(markdown: str) -> str:
    return COMMAND_HEADING.sub(lambda match: f"{match[0]}\n\n{command_reference(match[1])}", markdown)


# Signals ----------------------------------------------------------------------------------------


def declared_signals() -> list[str]:
    from django.dispatch import Signal

    from morph_webhooks import signals

    return [name for name, value in vars(signals).items() if isinstance(value, Signal)]


def signal_comments() -> dict[str, str]:
    """The comment above each ``name = Signal()`` in signals.py, which says when it is sent and
    with which arguments."""
    comments: dict[str, str] = {}
    block: list[str] = []
    for line in (PACKAGE / "signals.py").read_text().splitlines():
        if line.startswith("#"):
            block.append(line.lstrip("#").strip())
        elif match := re.fullmatch(r"(\w+) = Signal\(\)", line):
            if block:
                comments[match[1]] = plain(" ".join(block))
        else:
            block = []
    return comments


def model_signals() -> list[tuple[str, str, list[str]]]:
    setup_django()
    from morph_webhooks import signals
    from morph_webhooks.resources.base import ACTIONS
    from morph_webhooks.resources.registry import REGISTRY

    names = {id(value): name for name, value in vars(signals).items()}
    return [
        (spec.morph_model, spec.model.__name__, [names[id(spec.signals[action])] for action in ACTIONS])
        for spec in REGISTRY.values()
    ]


def signals_problems() -> list[str]:
    covered = {name for _, _, names in model_signals() for name in names} | signal_comments().keys()
    return [
        f"signals.py: {name} has no comment saying when it is sent"
        for name in declared_signals()
        if name not in covered
    ]


def signals_reference() -> str:
    from morph_webhooks import signals

    arguments = plain((signals.__doc__ or "").split("\n\n", 1)[1])
    rows = [
        f"| `{morph_model}` | `{model}` | " + ", ".join(f"`{name}`" for name in names) + " |"
        for morph_model, model, names in model_signals()
    ]
    in_models = {name for _, _, names in model_signals() for name in names}
    others = [
        f"## `{name}`\n\n{comment}" for name, comment in signal_comments().items() if name not in in_models
    ]
    return "\n\n".join(
        [
            "## A mirrored model's signals",
            arguments,
            "| Morph model | Model | Signals |\n|---|---|---|\n" + "\n".join(rows),
            *others,
        ]
    )


# The endpoint's answers -------------------------------------------------------------------------


def answered_codes() -> set[str]:
    """Every ``error`` code the endpoint can answer, from where each is defined."""
    from rest_framework import exceptions

    # DRF answers it itself for a method the view does not serve.
    codes = {exceptions.MethodNotAllowed.default_code}
    for path in PACKAGE.glob("*.py"):
        source = path.read_text()
        codes |= set(re.findall(r'default_code = "(\w+)"', source))
        codes |= set(re.findall(r'"error": "(\w+)"', source))
        codes |= {
            getattr(exceptions, name).default_code for name in re.findall(r"exceptions\.(\w+)\(", source)
        }
    return codes


def answered_statuses() -> set[str]:
    setup_django()
    from morph_webhooks.models import KEY_OUTCOMES, Outcome

    return {str(outcome) for outcome in (*KEY_OUTCOMES, Outcome.DUPLICATE)}


def answers_problems(markdown: str) -> list[str]:
    quoted = set(re.findall(r'"(\w+)"', markdown))
    code = answered_codes() | answered_statuses()
    return mismatch("answers page", "answer", code - quoted, set())


# The hook ---------------------------------------------------------------------------------------

PAGES = {
    "reference/settings.md": (settings_problems, complete_settings),
    "reference/checks.md": (checks_problems, complete_checks),
    "reference/commands.md": (commands_problems, complete_commands),
    "reference/answers.md": (answers_problems, lambda markdown: markdown),
}


def page_problems(path: str, markdown: str) -> list[str]:
    setup_django()
    if path == "reference/signals.md":
        return signals_problems()
    problems, _ = PAGES[path]
    return problems(markdown)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    from mkdocs.exceptions import PluginError

    path = page.file.src_uri
    if path not in PAGES and path != "reference/signals.md":
        return markdown
    if problems := page_problems(path, markdown):
        raise PluginError("The reference and the code disagree:\n" + "\n".join(problems))
    if path == "reference/signals.md":
        return markdown.replace("<!-- signals -->", signals_reference())
    _, complete = PAGES[path]
    return complete(markdown)
