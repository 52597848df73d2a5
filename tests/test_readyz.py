"""`/readyz` is cheap and bounded: cached for a few seconds, and a hung dependency costs at most
one thread (and one database connection) per check, however many probes arrive."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client

from operations.health import readiness
from tests.servers import free_port


class Tarpit:
    """A TCP listener that accepts connections and never answers: a hung dependency."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def hung_memory(settings):
    tarpit = Tarpit()
    settings.CORTEX = {
        **settings.CORTEX,
        "MEMORY_URL": f"http://127.0.0.1:{tarpit.port}/mcp",
        "COGNITION_URL": f"http://127.0.0.1:{free_port()}/mcp",  # down: refused at once
        "SERVICE_TIMEOUT_SECONDS": 30,
        # 3, not 1: the database check (a real query on a thread) must answer inside it even with 20
        # probes and a whole suite on two cores; the hung service still needs 30.
        "READYZ_TIMEOUT_SECONDS": 3,
        "READYZ_CACHE_SECONDS": 2,
    }
    readiness.forget()
    yield tarpit
    tarpit.close()
    readiness.forget()


def readiness_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name.startswith("readyz"))


@pytest.mark.django_db(transaction=True)
def test_a_hung_service_makes_readyz_answer_503_in_time_without_piling_up_threads(hung_memory):
    def probe(_: int) -> tuple[int, dict, float]:
        started = time.monotonic()
        response = Client().get("/readyz")
        return response.status_code, response.json(), time.monotonic() - started

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(probe, range(40)))
    assert {status for status, _, _ in results} == {503}
    assert all(body["checks"]["memory"] == "unavailable" for _, body, _ in results)
    assert all(body["checks"]["database"] == "ok" for _, body, _ in results)
    # READYZ_TIMEOUT_SECONDS is 3 and the hung service would hold a probe for 30: 10 tells them apart
    # with room for 40 probes on a loaded machine.
    assert max(elapsed for _, _, elapsed in results) < 10, "each probe is bounded by READYZ_TIMEOUT_SECONDS"
    assert len(hung_memory.accepted) == 1, "40 probes, one round of checks, one connection to the hung service"
    assert readiness_threads() <= 4, "one thread per check and one for the round"

    # Past the cache, the check still hanging from the first round is not started again.
    time.sleep(2.1)
    status = Client().get("/readyz").status_code
    assert status == 503
    assert len(hung_memory.accepted) == 1
    assert readiness_threads() <= 4


@pytest.mark.django_db(transaction=True)
def test_readyz_reuses_its_result_for_a_few_seconds(hung_memory, settings):
    first = Client().get("/readyz")
    assert first.status_code == 503
    tarpit_port_checks = len(hung_memory.accepted)
    for _ in range(10):
        assert Client().get("/readyz").json() == first.json()
    assert len(hung_memory.accepted) == tarpit_port_checks
