"""`manage.py run_cortex`: the whole system as one supervised group (what `make run` starts).

Each part is a child process. A child that dies is reported on stderr and the group stops, so a
broken service is never silently missing; Ctrl-C or SIGTERM stops every child cleanly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandParser


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None


class Command(BaseCommand):
    help = "Run the core (daphne) and its services as one supervised process group."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def children(self, options: dict) -> list[Child]:
        python = sys.executable
        return [
            Child(
                "core",
                [python, "-m", "daphne", "-b", options["host"], "-p", str(options["port"]), "cortex_site.asgi:application"],
            ),
        ]

    def handle(self, *args, **options) -> None:
        children = self.children(options)
        stopping = False

        def request_stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        for child in children:
            # Own process groups: the terminal's Ctrl-C reaches only us, and we stop children in order.
            child.process = subprocess.Popen(child.argv, start_new_session=True)
            self.stderr.write(f"[run_cortex] started {child.name} (pid {child.process.pid})")
        self.stderr.write(f"[run_cortex] Cortex Core on http://{options['host']}:{options['port']}/  (Ctrl-C stops all)")

        exit_code = 0
        while not stopping:
            for child in children:
                code = child.process.poll()
                if code is not None:
                    self.stderr.write(f"[run_cortex] {child.name} exited with code {code}; stopping the group")
                    exit_code = code or 1
                    stopping = True
                    break
            time.sleep(0.5)

        for child in reversed(children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in reversed(children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"[run_cortex] {child.name} did not stop in time; killing it")
                child.process.kill()
                child.process.wait()
        self.stderr.write("[run_cortex] stopped")
        if exit_code:
            sys.exit(exit_code)
