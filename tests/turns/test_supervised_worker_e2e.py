"""The turn worker as `make run` runs it (`manage.py run_cortex`): relaying to the core without
Redis, restarted after a SIGKILL, the dead worker's turn ended as failed by its successor, and an
answer reaching its user's memory through the outbox."""

from __future__ import annotations

import os
import re
import signal

import httpx2
import pytest

from tests.mcp.conftest import PASSWORD, TOKEN, memory_history_if_up, ready, wait_until
from tests.mcp.test_run_cortex_e2e import full_log, group
from tests.servers import create_user, free_port, fresh_database
from tests.streaming.clients import SSEStream, login
from tests.turns.test_turns_e2e import ENDLESS, first_of, until_end

# Supervision is the same whatever the database (`make test` runs this in its SQLite pass only); an
# expired lease failing its turn is tested on both databases in tests/turns/test_turns_api.py.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]


def test_killed_turn_worker_is_restarted_and_its_turn_ends_failed_not_stuck():
    core_port, memory_port, cognition_port = free_port(), free_port(), free_port()
    with fresh_database() as database:
        create_user("turns@example.com", PASSWORD, env={**os.environ, **database, "DEBUG": "1"})
        env = {"CORTEX_SERVICE_TOKEN": TOKEN, "TURN_LEASE_SECONDS": "2", "ECHO_DELAY_MS": "40", "LOG_LEVEL": "WARNING"}
        # Heartbeats within the SSE client's 10 s read timeout: while the worker restarts (seconds
        # of CPU on a loaded machine) the stream may carry no event, and `until_end` bounds the wait.
        env["SSE_HEARTBEAT_SECONDS"] = "2"
        supervisor = group(database, core_port, memory_port, cognition_port, **env).start()
        try:
            base = f"http://127.0.0.1:{core_port}"
            wait_until(lambda: ready(base))
            token = login(base, "turns@example.com", PASSWORD)
            auth = {"Authorization": f"Bearer {token}"}
            user_id = httpx2.get(f"{base}/auth/verify", headers=auth).json()["user_id"]
            workspace = httpx2.post(f"{base}/config/workspace", json={"name": "W"}, headers=auth).json()["workspace"]
            conversation = httpx2.post(
                f"{base}/config/conversation",
                json={"workspace_id": workspace["id"], "topic": "T", "responder": "echo"},
                headers=auth,
            ).json()["conversation"]["id"]

            def post(content: str) -> str:
                body = {"content": content, "conversation_id": conversation}
                return httpx2.post(f"{base}/input", json=body, headers=auth, timeout=30).json()["turn_id"]

            with SSEStream(base, token=token) as stream:
                doomed = post(ENDLESS)
                first_of(stream, doomed, "assistant.delta")  # the supervised worker relays to this core
                worker_pid = int(re.findall(r"started turn-worker \(pid (\d+)\)", full_log(supervisor))[-1])
                os.kill(worker_pid, signal.SIGKILL)
                after = post("after the crash")
                ended = until_end(stream, doomed, timeout=90)  # a lease, then a restart: a liveness bound
                assert ended[-1][1]["type"] == "assistant.failed"
                assert "lease expired" in ended[-1][1]["data"]["error"]["message"]
                completed = until_end(stream, after, timeout=90)[-1][1]
                assert completed["type"] == "assistant.completed" and completed["data"]["content"] == "after the crash"
            assert "turn-worker killed by SIGKILL; restarting it in 1s" in full_log(supervisor)

            def answer_in_memory() -> bool:
                items = memory_history_if_up(f"http://127.0.0.1:{memory_port}/mcp", user_id) or []
                return any(item.get("id") == completed["data"]["message_id"] for item in items)

            wait_until(answer_in_memory, timeout=30)
            [item] = [
                item
                for item in memory_history_if_up(f"http://127.0.0.1:{memory_port}/mcp", user_id) or []
                if item.get("id") == completed["data"]["message_id"]
            ]
            assert item["author"] == "assistant" and item["content"] == "after the crash"
        finally:
            assert supervisor.stop(timeout=60) == 0, supervisor.log()  # three steps, each bounded by STOP_SECONDS
