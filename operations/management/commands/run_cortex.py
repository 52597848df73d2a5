"""`manage.py run_cortex`: the whole system as one supervised group (what `make run` starts).

Children, started in this order: the memory service, the cognition service, the notes expert, the
memory outbox worker, the turn worker (assistant turns and due schedules), the webhook delivery
worker, housekeeping (pruning on a schedule), and
the core (uvicorn); stopped the core first, then the workers, then the services. The notes expert
is only run here: a workspace's owner registers it explicitly.

A crash is not an outage: a child other than the core that dies is restarted with exponential
backoff (1 s, doubling up to 30 s; back to 1 s once it has run for a minute), and every exit and
restart is logged on stderr, while the core keeps serving (inputs wait in the outbox meanwhile).
The core is restarted the same way once it has served; if it cannot start in the first place
(a taken port, a broken configuration) the group stops with its exit code. Ctrl-C or SIGTERM
stops every child cleanly, the core first, so its last inputs are committed before the rest go.

Hand-written rather than a process manager: honcho (Procfile) stops the whole group when one
process exits, which is the behaviour this replaces; supervisor restarts, but it is a daemon with
its own configuration files and logs, cannot tell "the core failed to start" from "a service
crashed", and would add a second way to start the system.

The children share one service token through their environment. In debug mode, without
CORTEX_SERVICE_TOKEN, a fresh one is generated for the group; outside debug mode it must be set.
Two credentials are not shared (`PRIVATE_TO`): the relay token, with which the turn worker posts
live events for any user to the core's `/internal/events` (fresh for each run unless
CORTEX_RELAY_TOKEN is set), and Prometheus's scrape token, which only the core checks.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_MAX = 30.0
STABLE_AFTER_SECONDS = 60.0  # a child that ran this long crashed afresh: its backoff starts over
CORE_START_SECONDS = 60.0
STOP_SECONDS = 10.0
POLL_SECONDS = 0.2
# Credentials only the named children receive (every other child's environment goes without).
PRIVATE_TO = {"CORTEX_RELAY_TOKEN": {"core", "turn-worker"}, "CORTEX_METRICS_TOKEN": {"core"}}


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen = None  # type: ignore[assignment]  # set when started
    service: str | None = None  # "memory" / "cognition" / "notes": started with `Command.service_env`
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_BACKOFF_FIRST
    restart_at: float | None = None  # set while it waits to be restarted


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Command(BaseCommand):
    help = "Run the core (uvicorn), the memory and cognition services and the outbox worker as one group."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--memory-port", type=int, default=9000)
        parser.add_argument("--cognition-port", type=int, default=9100)
        parser.add_argument("--notes-port", type=int, default=9200, help="The notes expert (0: not run).")
        parser.add_argument(
            "--workers", type=int, default=1, help="core processes (more than one needs REDIS_URL for live events)"
        )
        parser.add_argument(
            "--housekeeping-every", type=int, default=3600, help="Seconds between housekeeping runs (pruning)."
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
            "CORTEX_RELAY_TOKEN": settings.CORTEX["RELAY_TOKEN"] or secrets.token_urlsafe(32),
            "MEMORY_URL": f"http://127.0.0.1:{options['memory_port']}/mcp",
            "COGNITION_URL": f"http://127.0.0.1:{options['cognition_port']}/mcp",
            # The turn worker relays its events to the core's streams here (without REDIS_URL).
            "CORTEX_CORE_URL": f"http://{self.local_host(options)}:{options['port']}",
            # The group has its outbox worker: the core's commits wake it, and it delivers memory
            # (a drain's claim, calls and outcomes off the core's CPU; bench.hotpath: +15% inputs/s).
            "MEMORY_DRAIN_BY_WORKER": os.environ.get("MEMORY_DRAIN_BY_WORKER", "1"),
            # Every child's metrics in one place, served by any core process's /metrics (common.metrics).
            "PROMETHEUS_MULTIPROC_DIR": os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            or tempfile.mkdtemp(prefix="cortex-metrics-"),
        }

    @staticmethod
    def service_env(env: dict[str, str], *, cognition: bool = False, expert: bool = False) -> dict[str, str]:
        """A service child's environment: no key that signs user tokens, sessions or expert tokens;
        cognition also without the service token (it holds only its read-only credential), and an
        expert without any service credential (it is called with tokens the core mints)."""
        dropped = {"SECRET_KEY", "JWT_SIGNING_KEY", "EXPERT_SIGNING_KEYS"}
        if cognition or expert:
            dropped.add("CORTEX_SERVICE_TOKEN")
        if expert:
            dropped.add("CORTEX_COGNITION_TOKEN")
        return {**{k: v for k, v in env.items() if k not in dropped}, "CORTEX_SERVICE_PROCESS": "1"}

    def children(self, options: dict) -> list[Child]:
        python = sys.executable
        # The group's configuration was checked once, by this command's own system checks at its
        # start (with the whole environment): each Django child would run the same checks again,
        # importing every URL's view (the MCP SDK among them), about a second of CPU each, at
        # every start and restart. (A child's environment lacks some keys, `service_env`, so its
        # own checks would only warn about what it is not meant to hold.)
        manage = [python, str(settings.BASE_DIR / "manage.py")]
        skip = "--skip-checks"
        return [
            Child(
                "memory", [*manage, "run_memory_service", skip, "--port", str(options["memory_port"])], service="memory"
            ),
            Child(
                "cognition",
                [*manage, "run_cognition_service", skip, "--port", str(options["cognition_port"])],
                service="cognition",
            ),
            *(
                [
                    Child(
                        "notes",
                        [
                            *manage,
                            "run_notes_expert",
                            skip,
                            "--port",
                            str(options["notes_port"]),
                            "--jwks-url",
                            f"http://{self.local_host(options)}:{options['port']}/.well-known/jwks.json",
                        ],
                        service="notes",
                    )
                ]
                if options["notes_port"]
                else []
            ),
            Child("outbox-worker", [*manage, "memory_outbox_worker", skip]),
            Child("turn-worker", [*manage, "turn_worker", skip]),
            Child("webhook-worker", [*manage, "webhook_worker", skip]),
            Child("housekeeping", [*manage, "housekeeping", skip, "--every", str(options["housekeeping_every"])]),
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

    @staticmethod
    def local_host(options: dict) -> str:
        return "127.0.0.1" if options["host"] in ("0.0.0.0", "::", "") else options["host"]

    def log(self, message: str) -> None:
        self.stderr.write(f"[run_cortex] {time.strftime('%H:%M:%S')} {message}")

    def start(self, child: Child, env: dict[str, str]) -> None:
        child_env = (
            self.service_env(env, cognition=child.service == "cognition", expert=child.service == "notes")
            if child.service
            else env
        )
        child_env = {key: value for key, value in child_env.items() if child.name in PRIVATE_TO.get(key, {child.name})}
        # Own process groups: the terminal's Ctrl-C reaches only us, and we stop children in order.
        child.process = subprocess.Popen(child.argv, env=child_env, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None

    def handle(self, *args, **options) -> None:
        if options["workers"] > 1 and not settings.REDIS_URL:
            raise CommandError("--workers above 1 needs REDIS_URL: live events cross processes through Redis.")
        children = self.children(options)
        env = self.child_env(options)
        host = self.local_host(options)
        if listening(host, options["port"]):
            # Checked first: otherwise the other process would look like our core having started.
            raise CommandError(f"{host}:{options['port']} is already in use; the core cannot start there.")
        core = next(child for child in children if child.name == "core")
        stopping = False

        def request_stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        for child in children:
            self.start(child, env)
            self.log(f"started {child.name} (pid {child.process.pid})")

        exit_code = 0
        # The core must come up once: if it cannot, nothing would serve, so the group stops.
        deadline = time.monotonic() + CORE_START_SECONDS
        while not stopping and not listening(host, options["port"]):
            code = core.process.poll()
            if code is not None or time.monotonic() > deadline:
                reason = describe_exit(code) if code is not None else f"not listening after {CORE_START_SECONDS:.0f}s"
                self.log(f"core failed to start ({reason}); stopping the group")
                exit_code = code or 1
                stopping = True
                break
            time.sleep(POLL_SECONDS)
        if not stopping:
            self.log(f"Cortex Core on http://{options['host']}:{options['port']}/  (Ctrl-C stops all)")

        while not stopping:
            now = time.monotonic()
            for child in children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        self.start(child, env)
                        child.restarts += 1
                        self.log(f"restarted {child.name} (pid {child.process.pid}, restart {child.restarts})")
                    continue
                code = child.process.poll()
                if code is None:
                    continue
                if now - child.started_at >= STABLE_AFTER_SECONDS:
                    child.backoff = RESTART_BACKOFF_FIRST
                child.restart_at = now + child.backoff
                self.log(f"{child.name} {describe_exit(code)}; restarting it in {child.backoff:.0f}s")
                child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX)
            time.sleep(POLL_SECONDS)

        # The core first, and alone: its in-flight requests finish and their outbox rows commit
        # while the services are still there to receive them; then the workers together (their
        # last deliveries and turns still reach the services), then the services together: a
        # stop costs the slowest child of each step, not the sum of all (each takes a second or two).
        self.stop(*[child for child in children if child is core])
        self.stop(*[child for child in children if child is not core and child.service is None])
        self.stop(*[child for child in children if child.service is not None])
        self.log("stopped")
        if exit_code:
            sys.exit(exit_code)

    def stop(self, *children: Child) -> None:
        """SIGTERM to each, then wait for all of them (SIGKILL after STOP_SECONDS)."""
        running = [child for child in children if child.process is not None and child.process.poll() is None]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for child in running:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{child.name} did not stop in {STOP_SECONDS:.0f}s; killing it")
                child.process.kill()
                child.process.wait()
