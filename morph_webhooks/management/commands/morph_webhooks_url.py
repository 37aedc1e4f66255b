from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...endpoint import EndpointError, is_local, webhook_url


class Command(BaseCommand):
    help = (
        "Print the URL to paste in Morph's webhook settings: the endpoint on SITE_URL with the "
        "first of SECRETS as its token. Only the URL goes to stdout."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "site_url",
            help="Where the project is served: scheme, host and any prefix, e.g. https://crm.example.com",
        )

    def handle(self, *args: Any, site_url: str, **options: Any) -> None:
        try:
            url = webhook_url(site_url)
        except EndpointError as exc:
            raise CommandError(str(exc)) from exc
        parts = urlsplit(url)
        if not parts.query:
            self.stderr.write(self.style.WARNING("No token: anyone who finds this URL can post events."))
        elif parts.scheme == "http" and not is_local(url):
            self.stderr.write(
                self.style.WARNING("This URL is http: the token would cross the network readable. Use https.")
            )
        self.stdout.write(url)
