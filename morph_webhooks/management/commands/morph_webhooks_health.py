from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...health import CheckResult, Report, Status, run_checks


class Command(BaseCommand):
    help = (
        "Run the health checks (dead and overdue deliveries, the last hour's failure rate, silent "
        "connections, syncs, the database) for cron and probes. Exits with status 0 when all is ok, "
        "1 on a warning, 2 when something is critical."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the report as the health view does.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = run_checks()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json(), indent=2))
        else:
            self.stdout.write(self.table(report))
        # Cron and probes read the exit status: 1 for a warning, 2 for critical (CommandError exits 1).
        if report.status != Status.OK:
            sys.exit(int(report.status))

    def table(self, report: Report) -> str:
        width = max(len(check.name) for check in report.checks)
        lines = [
            f"{check.name:<{width}}  {self.styled(check, f'{check.status!s:<8}')}  {check.detail}"
            for check in report.checks
        ]
        return "\n".join([*lines, f"Overall: {self.styled(report, str(report.status))}"])

    def styled(self, result: CheckResult | Report, text: str) -> str:
        style = {
            Status.OK: self.style.SUCCESS,
            Status.WARNING: self.style.WARNING,
            Status.CRITICAL: self.style.ERROR,
        }[result.status]
        return style(text)
