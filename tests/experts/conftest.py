"""Experts as real processes: the notes expert (verifying tokens against a real core's JWKS) and
a recording expert that logs every Authorization header it receives."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import ServerProcess, core_server, free_port, fresh_database, manage_command, running, server_env


def notes_expert(env: dict[str, str], *, jwks_url: str, port: int | None = None) -> ServerProcess:
    port = port or free_port()
    # As run_cortex starts it: no key that signs anything, no service credential.
    child_env = {
        key: value
        for key, value in env.items()
        if key not in ("SECRET_KEY", "JWT_SIGNING_KEY", "EXPERT_SIGNING_KEYS", "CORTEX_SERVICE_TOKEN")
    }
    child_env["CORTEX_SERVICE_PROCESS"] = "1"
    return manage_command("run_notes_expert", "--port", str(port), "--jwks-url", jwks_url, env=child_env, port=port)


@dataclass
class RecordingExpert:
    server: ServerProcess
    log_path: Path

    @property
    def url(self) -> str:
        return f"{self.server.url}/mcp"

    def authorizations(self) -> list[str]:
        return self.log_path.read_text().splitlines() if self.log_path.exists() else []


@contextlib.contextmanager
def recording_expert(
    *,
    ttl_ms: int = 0,
    crash_tool: bool = False,
    legacy_asker: bool = False,
    form_asker: bool = False,
    notes: bool = False,
) -> Iterator[RecordingExpert]:
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="cortex-expert-auth-", suffix=".log")[1])
    argv = [sys.executable, "-m", "tests.experts.recording_expert", "--port", str(port), "--log", str(log_path)]
    argv += ["--ttl-ms", str(ttl_ms)] + (["--crash-tool"] if crash_tool else [])
    argv += ["--legacy-asker"] if legacy_asker else []
    argv += ["--form-asker"] if form_asker else []
    argv += ["--notes"] if notes else []
    server = ServerProcess(name=f"recording-expert:{port}", argv=argv, port=port, env=server_env())
    with running(server):
        yield RecordingExpert(server=server, log_path=log_path)
    log_path.unlink(missing_ok=True)


@dataclass
class NotesStack:
    env: dict[str, str]
    core: ServerProcess
    notes_a: ServerProcess
    notes_b: ServerProcess

    @property
    def jwks_url(self) -> str:
        return f"{self.core.url}/.well-known/jwks.json"


@pytest.fixture(scope="module")
def notes_stack() -> Iterator[NotesStack]:
    """A core process (serving the JWKS) and two notes experts, A and B, on one fresh database."""
    with fresh_database() as database:
        env = server_env(**database)
        with running(core_server(env=env)) as core:
            jwks_url = f"{core.url}/.well-known/jwks.json"
            with running(notes_expert(env, jwks_url=jwks_url)) as a, running(notes_expert(env, jwks_url=jwks_url)) as b:
                yield NotesStack(env=env, core=core, notes_a=a, notes_b=b)


@dataclass
class TaskExpert:
    """tests/experts/task_expert.py as a real process; `log()` is what it saw, one dict a line."""

    server: ServerProcess
    log_path: Path

    @property
    def url(self) -> str:
        return f"{self.server.url}/mcp"

    def log(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def task_expert(*, legacy: bool = False, poll_ms: int = 200) -> Iterator[TaskExpert]:
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="cortex-task-expert-", suffix=".log")[1])
    argv = [sys.executable, "-m", "tests.experts.task_expert", "--port", str(port), "--log", str(log_path)]
    argv += ["--poll-ms", str(poll_ms)] + (["--legacy"] if legacy else [])
    server = ServerProcess(name=f"task-expert:{port}", argv=argv, port=port, env=server_env())
    with running(server):
        yield TaskExpert(server=server, log_path=log_path)
    log_path.unlink(missing_ok=True)
