"""`manage.py run_cortex` (what `make run` starts): the whole group, supervised."""

from __future__ import annotations

import socket

import httpx2
import pytest

from tests.mcp.conftest import wait_until
from tests.servers import free_port, fresh_database, manage_command, server_env

pytestmark = pytest.mark.e2e


def group(database: dict[str, str], core_port: int, memory_port: int, cognition_port: int):
    # Debug mode without a service token: the group generates one and hands it to every child.
    env = server_env(**database, DEBUG="1", CORTEX_SERVICE_TOKEN="")
    return manage_command(
        "run_cortex",
        "--port",
        str(core_port),
        "--memory-port",
        str(memory_port),
        "--cognition-port",
        str(cognition_port),
        env=env,
        port=core_port,
    )


def test_run_cortex_starts_every_part_and_stops_them_all():
    ports = free_port(), free_port(), free_port()
    with fresh_database() as database:
        supervisor = group(database, *ports).start()
        try:
            wait_until(lambda: httpx2.get(f"http://127.0.0.1:{ports[0]}/readyz", timeout=5).status_code == 200)
            unauthenticated = httpx2.post(f"http://127.0.0.1:{ports[1]}/mcp", json={}, timeout=5)
            assert unauthenticated.status_code == 401, "the generated token protects the services"
        finally:
            assert supervisor.stop() == 0, supervisor.log()
        for port in ports:
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        log = supervisor.log()
        assert "generated one for this run" in log and "[run_cortex] stopped" in log


def test_a_child_that_dies_is_reported_and_stops_the_group():
    core_port, memory_port, cognition_port = free_port(), free_port(), free_port()
    with fresh_database() as database, socket.socket() as squatter:
        squatter.bind(("127.0.0.1", memory_port))
        squatter.listen()
        supervisor = group(database, core_port, memory_port, cognition_port)
        supervisor.port = 0
        supervisor.start()
        wait_until(lambda: supervisor.process.poll() is not None, timeout=30)
        assert supervisor.process.returncode != 0
        assert "memory exited with code" in supervisor.log()
