"""The progress of a sync on a terminal: one line per model's scan (pages, resources, rate),
rewritten in place after each page with a carriage return, and wiped before the model's summary.
Only for a terminal: cron and CI logs get the summary lines alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.core.management.base import OutputWrapper

if TYPE_CHECKING:
    from ..sync import ModelSync


class Progress:
    def __init__(self, out: OutputWrapper, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.clock = clock
        # A model's scan starts when the previous one ends (or the sync starts).
        self.started = clock()
        self.width = 0

    def show(self, model: ModelSync) -> None:
        elapsed = self.clock() - self.started
        rate = f"{model.resources / elapsed:,.0f}/s" if elapsed > 0 else "-"
        pages = f"{model.pages:,} page{'' if model.pages == 1 else 's'}"
        self.write(f"  {model.model}: {pages}, {model.resources:,} resources, {rate}")

    def done(self, summary: Callable[[ModelSync], None]) -> Callable[[ModelSync], None]:
        """``summary`` of a model, shown in place of its progress line."""

        def show_summary(model: ModelSync) -> None:
            self.write("")
            self.out.write("\r", ending="")
            self.width = 0
            summary(model)
            self.started = self.clock()

        return show_summary

    def write(self, line: str) -> None:
        # Padded over what the previous line left on the screen.
        self.out.write(f"\r{line.ljust(self.width)}", ending="")
        self.out.flush()
        self.width = len(line)
