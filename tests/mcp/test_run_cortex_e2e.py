"""`manage.py run_cortex` (what `make run` starts): the whole group, supervised.

A crashed service is restarted by itself while the core keeps serving; only the core failing to
start, or a stop request, stops the group."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
from dataclasses import replace

import httpx2
import pytest

from tests.mcp.conftest import PASSWORD, TOKEN, ready, wait_until
from tests.mcp.test_delivery_e2e import assert_exactly_once, login
from tests.servers import ROOT, ServerProcess, create_user, free_port, fresh_database, manage_command, server_env

# Supervision is the same whatever the database (`make test` runs this in its SQLite pass only);
# the database's part of a killed service (each input delivered once) is covered in both passes by
# tests/mcp/test_delivery_e2e.py.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]


def group(database: dict[str, str], core_port: int, memory_port: int, cognition_port: int, **env: str):
    # Debug mode (as `make run`); without a service token the group generates one for every child.
    env = server_env(**database, DEBUG="1", **{"CORTEX_SERVICE_TOKEN": "", **env})
    supervisor = manage_command(
        "run_cortex",
        "--port",
        str(core_port),
        "--memory-port",
        str(memory_port),
        "--cognition-port",
        str(cognition_port),
        "--notes-port",
        str(free_port()),
        env=env,
        port=core_port,
    )
    # Eight children start at once, each a Django process; on two cores shared with other work the
    # core may listen only after half a minute (a liveness bound, not a timing).
    supervisor.start_timeout = 90.0
    return supervisor


def full_log(server: ServerProcess) -> str:
    return server.log_path.read_text(errors="replace")


def test_run_cortex_starts_every_part_and_stops_them_all():
    ports = free_port(), free_port(), free_port()
    with fresh_database() as database:
        supervisor = group(database, *ports).start()
        try:
            wait_until(lambda: ready(f"http://127.0.0.1:{ports[0]}"))
            unauthenticated = httpx2.post(f"http://127.0.0.1:{ports[1]}/mcp", json={}, timeout=5)
            assert unauthenticated.status_code == 401, "the generated token protects the services"
            wait_until(lambda: "housekeeping: Deleted" in full_log(supervisor), timeout=20)
        finally:
            assert supervisor.stop(timeout=60) == 0, supervisor.log()  # three steps, each bounded by STOP_SECONDS
        for port in ports:
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        log = full_log(supervisor)
        assert "generated one for this run" in log and re.search(r"\[run_cortex\] [\d:]+ stopped", log)


def run_to_exit(supervisor: ServerProcess) -> subprocess.CompletedProcess:
    return subprocess.run(supervisor.argv, cwd=ROOT, env=supervisor.env, capture_output=True, text=True, timeout=120)


def ephemeral_port() -> int:
    """A port from the kernel's ephemeral range, for an address that is not this machine's: a
    transparent proxy (as in some sandboxes and CI runners) accepts connections to any foreign address
    on the ports outside that range, which would make the address look like it is listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_core_failing_to_start_stops_the_group():
    core_port, memory_port, cognition_port = ephemeral_port(), free_port(), free_port()
    with fresh_database() as database:
        # An address this machine does not have: the core cannot bind it and exits; the services are fine.
        supervisor = group(database, core_port, memory_port, cognition_port)
        result = run_to_exit(replace(supervisor, argv=[*supervisor.argv, "--host", "203.0.113.7"]))
    assert result.returncode != 0
    assert "core failed to start" in result.stderr
    assert "restarting" not in result.stderr
    for port in (memory_port, cognition_port):
        assert not port_open(port), "the services were stopped with the group"


def test_the_core_port_already_in_use_stops_the_group_at_once():
    core_port, memory_port, cognition_port = free_port(), free_port(), free_port()
    with fresh_database() as database, socket.socket() as squatter:
        squatter.bind(("127.0.0.1", core_port))
        squatter.listen()
        result = run_to_exit(group(database, core_port, memory_port, cognition_port))
    assert result.returncode != 0
    assert "is already in use" in result.stderr


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_killed_memory_service_comes_back_while_the_core_keeps_answering_and_every_input_reaches_it_once():
    core_port, memory_port, cognition_port = free_port(), free_port(), free_port()
    memory_url = f"http://127.0.0.1:{memory_port}/mcp"
    with fresh_database() as database:
        env = {
            "CORTEX_SERVICE_TOKEN": TOKEN,
            "INPUT_RATE": "100000/min",
            "OUTBOX_POLL_SECONDS": "1",
            "OUTBOX_BACKOFF_BASE_SECONDS": "1",
            "OUTBOX_BACKOFF_MAX_SECONDS": "2",
        }
        create_user("crash@example.com", PASSWORD, env=server_env(**database))
        supervisor = group(database, core_port, memory_port, cognition_port, **env).start()
        try:
            base = f"http://127.0.0.1:{core_port}"
            wait_until(lambda: ready(base))
            token, user_id = login(base, "crash@example.com")
            memory_pid = int(re.search(r"started memory \(pid (\d+)\)", full_log(supervisor)).group(1))

            ids: list[str] = []
            statuses: list[int] = []
            restarted = threading.Event()

            def post_inputs() -> None:
                with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as api:
                    # Before the kill, while memory is down, and 20 more once it is back.
                    stop_at = 2000
                    for n in range(2000):
                        if n >= stop_at:
                            break
                        if restarted.is_set() and stop_at == 2000:
                            stop_at = n + 20
                        response = api.post("/input", json={"content": f"input {n}"})
                        statuses.append(response.status_code)
                        if response.status_code == 200:
                            ids.append(response.json()["data"]["id"])

            poster = threading.Thread(target=post_inputs)
            poster.start()
            wait_until(lambda: len(ids) >= 20, timeout=30)
            os.kill(memory_pid, signal.SIGKILL)
            at_kill = len(ids)
            wait_until(lambda: "restarted memory" in full_log(supervisor), timeout=30, interval=0.05)
            wait_until(lambda: port_open(memory_port), timeout=30, interval=0.05)  # back by itself
            during_outage = len(ids) - at_kill
            restarted.set()
            poster.join(timeout=60)

            assert set(statuses) == {200}, "the core answered every input while memory was down"
            assert during_outage > 0, "inputs arrived while memory was down"
            log = full_log(supervisor)
            assert "memory killed by SIGKILL; restarting it in 1s" in log
            assert not re.search(r"\b(core|cognition|outbox-worker) (exited|killed)", log)
            assert_exactly_once(memory_url, database, user_id, ids)
        finally:
            assert supervisor.stop(timeout=60) == 0, supervisor.log()  # three steps, each bounded by STOP_SECONDS


def test_a_service_that_cannot_start_is_retried_with_growing_backoff_while_the_core_serves():
    """(That it comes up once it can is the SIGKILL test's part.)"""
    core_port, memory_port, cognition_port = free_port(), free_port(), free_port()
    with fresh_database() as database:
        squatter = socket.socket()  # bound, not listening: memory cannot bind, and calls to it are refused at once
        squatter.bind(("127.0.0.1", memory_port))
        supervisor = group(database, core_port, memory_port, cognition_port).start()
        try:
            base = f"http://127.0.0.1:{core_port}"
            wait_until(lambda: "memory exited with code 1; restarting it in 2s" in full_log(supervisor), timeout=60)
            assert httpx2.get(f"{base}/healthz", timeout=5).status_code == 200, "the core keeps serving"
            answer = httpx2.get(f"{base}/readyz", timeout=10)
            assert answer.status_code == 503 and answer.json()["checks"]["memory"] == "unavailable"
        finally:
            squatter.close()
            assert supervisor.stop(timeout=60) == 0, supervisor.log()  # three steps, each bounded by STOP_SECONDS
        log = full_log(supervisor)
        assert "memory exited with code 1; restarting it in 1s" in log
        assert re.search(r"restarted memory \(pid \d+, restart 1\)", log)
        assert not re.search(r"\bcore (exited|killed)", log)
