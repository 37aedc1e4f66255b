from __future__ import annotations

import json
import shlex
import signal
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...testing.fake_api import FakeMorphAPI
from ...testing.fake_crm import fake_crm

CONNECTOR, OWNER = "hubspot", "tenant_1"
KEY, SECRET = "fake-api-key", "fake-api-secret-0123456789"


class Command(BaseCommand):
    help = (
        "Serve a fake of Morph's REST API on 127.0.0.1, with a made-up CRM (a pipeline, its stages, "
        f"sales reps, companies, contacts and deals) for connector {CONNECTOR!r}, owner {OWNER!r}, "
        "until Ctrl-C: something to run morph_webhooks_sync against without a Morph account."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8001, help="The port to listen on (default 8001).")
        parser.add_argument(
            "--opportunities", type=int, default=300, help="How many deals to serve (default 300)."
        )
        parser.add_argument("--seed", type=int, default=1, help="Another seed makes another CRM (default 1).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["opportunities"] < 0:
            raise CommandError("--opportunities cannot be negative.")
        api = FakeMorphAPI(KEY, SECRET)
        for model, resources in fake_crm(options["opportunities"], options["seed"]):
            api.add(CONNECTOR, OWNER, model, resources)
        try:
            api.start(options["port"])
        except OSError as exc:
            raise CommandError(f"Cannot listen on 127.0.0.1:{options['port']}: {exc}. Try --port.") from exc
        served = ", ".join(f"{len(resources)} {model}" for (_, _, model), resources in api.resources.items())
        self.stdout.write(f"A fake Morph API on {api.url}, serving {served} for {CONNECTOR} / {OWNER}.")
        # What any project reads (not the example's environment variables), and this interpreter:
        # the one whose packages include the app, whatever `python` means in another shell.
        self.stdout.write("Point the app at it in your settings' MORPH_WEBHOOKS:")
        for setting, value in (("API_URL", api.url), ("API_KEY", api.key), ("API_SECRET", api.secret)):
            self.stdout.write(f"    {json.dumps(setting)}: {json.dumps(value)},")
        self.stdout.write("then sync from it, in another shell (and the same directory):")
        self.stdout.write(
            f"  {shlex.quote(sys.executable)} manage.py morph_webhooks_sync --connector {CONNECTOR} --owner {OWNER}"
        )
        self.stdout.write("Quit with CONTROL-C.", ending="\n")
        self.stdout.flush()
        stopped = threading.Event()
        # Ctrl-C, or a process manager's SIGTERM, ends it cleanly (even where a shell started it
        # in the background, which ignores SIGINT).
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *args: stopped.set())
        try:
            stopped.wait()
        finally:
            api.stop()
        self.stdout.write("Stopped.")
