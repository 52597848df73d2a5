"""`manage.py run_cortex`: the whole system as one supervised group (what `make run` starts).

Children, started in this order and stopped in the reverse one: the memory service, the cognition
service, the memory outbox worker, and the core (daphne). A child that dies is reported on stderr
and the group stops, so a broken service is never silently missing; Ctrl-C or SIGTERM stops every
child cleanly.

The children share one service token through their environment. In debug mode, without
CORTEX_SERVICE_TOKEN, a fresh one is generated for the group; outside debug mode it must be set.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen = None  # type: ignore[assignment]  # set when started
    service: str | None = None  # "memory" / "cognition": started with `Command.service_env`


class Command(BaseCommand):
    help = "Run the core (uvicorn), the memory and cognition services and the outbox worker as one group."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--memory-port", type=int, default=9000)
        parser.add_argument("--cognition-port", type=int, default=9100)
        parser.add_argument(
            "--workers", type=int, default=1, help="core processes (more than one needs REDIS_URL for live events)"
        )

    def child_env(self, options: dict) -> dict[str, str]:
        token = settings.CORTEX["SERVICE_TOKEN"]
        if not token:
            if not settings.DEBUG:
                raise CommandError("Set CORTEX_SERVICE_TOKEN: the core and its services authenticate with it.")
            token = secrets.token_urlsafe(32)
            self.stderr.write("[run_cortex] CORTEX_SERVICE_TOKEN is unset: generated one for this run (debug mode)")
        # Cognition's read-only credential is private to the group: a fresh one unless configured.
        cognition_token = settings.CORTEX["COGNITION_TOKEN"] or secrets.token_urlsafe(32)
        return {
            **os.environ,
            "CORTEX_SERVICE_TOKEN": token,
            "CORTEX_COGNITION_TOKEN": cognition_token,
            "MEMORY_URL": f"http://127.0.0.1:{options['memory_port']}/mcp",
            "COGNITION_URL": f"http://127.0.0.1:{options['cognition_port']}/mcp",
            # Every child's metrics in one place, served by any core process's /metrics (common.metrics).
            "PROMETHEUS_MULTIPROC_DIR": os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            or tempfile.mkdtemp(prefix="cortex-metrics-"),
        }

    @staticmethod
    def service_env(env: dict[str, str], *, cognition: bool) -> dict[str, str]:
        """A service child's environment: no key that signs user tokens or sessions; cognition
        also without the service token (it holds only its read-only credential)."""
        dropped = {"SECRET_KEY", "JWT_SIGNING_KEY", *(["CORTEX_SERVICE_TOKEN"] if cognition else [])}
        return {**{k: v for k, v in env.items() if k not in dropped}, "CORTEX_SERVICE_PROCESS": "1"}

    def children(self, options: dict) -> list[Child]:
        python = sys.executable
        manage = [python, str(settings.BASE_DIR / "manage.py")]
        return [
            Child("memory", [*manage, "run_memory_service", "--port", str(options["memory_port"])], service="memory"),
            Child(
                "cognition",
                [*manage, "run_cognition_service", "--port", str(options["cognition_port"])],
                service="cognition",
            ),
            Child("outbox-worker", [*manage, "memory_outbox_worker"]),
            # uvicorn with uvloop and httptools: measured faster than daphne for the API and the
            # streams (bench/README.md); daphne stays for `runserver`.
            Child(
                "core",
                [
                    python,
                    "-m",
                    "uvicorn",
                    "cortex_site.asgi:application",
                    "--host",
                    options["host"],
                    "--port",
                    str(options["port"]),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--lifespan",
                    "off",
                    "--no-access-log",
                    # Forwarded headers are the application's to trust (from configured proxies only).
                    "--no-proxy-headers",
                    "--timeout-graceful-shutdown",
                    "5",
                    *(["--workers", str(options["workers"])] if options["workers"] > 1 else []),
                ],
            ),
        ]

    def handle(self, *args, **options) -> None:
        if options["workers"] > 1 and not settings.REDIS_URL:
            raise CommandError("--workers above 1 needs REDIS_URL: live events cross processes through Redis.")
        children = self.children(options)
        env = self.child_env(options)
        stopping = False

        def request_stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        for child in children:
            # Own process groups: the terminal's Ctrl-C reaches only us, and we stop children in order.
            child_env = self.service_env(env, cognition=child.service == "cognition") if child.service else env
            child.process = subprocess.Popen(child.argv, env=child_env, start_new_session=True)
            self.stderr.write(f"[run_cortex] started {child.name} (pid {child.process.pid})")
        self.stderr.write(
            f"[run_cortex] Cortex Core on http://{options['host']}:{options['port']}/  (Ctrl-C stops all)"
        )

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
