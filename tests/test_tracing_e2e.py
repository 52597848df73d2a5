"""Tracing end to end: every process exports to a test OTLP/HTTP receiver (tests/otlp_receiver.py,
decoding opentelemetry-proto), and one trace connects what an input and a turn went through across
the core, the memory service, the turn worker, the model and an expert (which sees the trace id in
its call's `_meta`). A client's `traceparent` header is honoured: its trace id is the trace's."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx2
import pytest

from tests.experts.conftest import recording_expert
from tests.mcp.conftest import memory_service, stack
from tests.otlp_receiver import OTLPReceiver, connected, tree
from tests.servers import (
    core_server,
    create_users,
    fake_llm_server,
    free_port,
    fresh_database,
    running,
    running_together,
    server_env,
)
from tests.streaming.clients import SSEStream, login
from tests.turns.test_turns_e2e import ENV, PASSWORD, turn_worker, until_end

# Run in the SQLite pass only: spans and trace context between processes: nothing the database decides.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]


def traced_env(receiver: OTLPReceiver, **extra: str) -> dict[str, str]:
    # A short batch delay: spans reach the receiver within a fraction of a second.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100", **extra}


def client_traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def test_an_input_that_reached_memory_is_one_trace_from_the_client_to_the_memory_service():
    with OTLPReceiver() as receiver, stack() as services:
        env = {**services.env, **traced_env(receiver), "LOG_LEVEL": "WARNING"}
        memory = memory_service(env, port=services.memory_port)
        with running_together(
            memory,
            core_server(env=env),
            meanwhile=lambda: create_users("alice@example.com", password=PASSWORD, env=env),
        ) as (_, core):
            token = login(core.url, "alice@example.com", PASSWORD)
            trace_id, parent = client_traceparent()
            sent = httpx2.post(
                f"{core.url}/input",
                json={"content": "remember the blue door"},
                headers={"Authorization": f"Bearer {token}", "traceparent": parent},
                timeout=30,
            )
            assert sent.status_code == 200, sent.text
            # Wait for every span the test asks about: each process exports in its own batches, so the
            # memory service's `server/discover` span can arrive before its `tools/call` span.
            wanted = {
                ("cortex-core", "cortex.input.commit"),
                ("cortex-core", "cortex.outbox.deliver"),
                ("cortex-core", "tools/call store_inputs"),
                ("cortex-memory", "tools/call store_inputs"),
            }
            spans = receiver.wait_for(
                trace_id,
                lambda spans: wanted <= {(s.service, s.name) for s in spans} and connected_but_root(spans),
            )
    names = {(span.service, span.name) for span in spans}
    assert wanted <= names, names
    assert any(span.service == "cortex-core" and span.name.startswith("POST") for span in spans), names
    print(tree(spans))


def connected_but_root(spans) -> bool:
    """Connected to the client's span: the one root's parent is the client's (not among them)."""
    return bool(spans) and connected(spans)


def test_a_turn_is_one_trace_through_the_model_and_the_expert_which_sees_it_in_meta(tmp_path: Path):
    llm_log = tmp_path / "llm.jsonl"
    with OTLPReceiver() as receiver, fresh_database() as db_env, recording_expert(notes=True) as expert:
        base = server_env(
            **db_env,
            **{**ENV, "COGNITION_URL": f"http://127.0.0.1:{free_port()}/mcp"},
            **traced_env(receiver),
        )
        fake_llm = fake_llm_server(env=server_env(), log=llm_log)
        core = core_server(env=base)
        with running_together(
            fake_llm, core, meanwhile=lambda: create_users("alice@example.com", password=PASSWORD, env=base)
        ):
            env = {**base, "CORTEX_CORE_URL": core.url, "CORTEX_LLM_BASE_URL": f"{fake_llm.url}/v1"}
            token = login(core.url, "alice@example.com", PASSWORD)
            auth = {"Authorization": f"Bearer {token}"}
            workspace = httpx2.post(f"{core.url}/config/workspace", json={"name": "W"}, headers=auth).json()
            workspace_id = workspace["workspace"]["id"]
            registered = httpx2.post(
                f"{core.url}/config/workspace/{workspace_id}/experts",
                json={"name": "notes", "url": expert.url, "auth": "none"},
                headers=auth,
                timeout=30,
            )
            assert registered.status_code == 201 and registered.json()["expert"]["status"] == "ok", registered.text
            conversation = httpx2.post(
                f"{core.url}/config/conversation",
                json={"workspace_id": workspace_id, "topic": "T", "responder": "llm"},
                headers=auth,
            ).json()["conversation"]["id"]
            with running(turn_worker(env)), SSEStream(core.url, token=token) as stream:
                trace_id, parent = client_traceparent()
                answer = httpx2.post(
                    f"{core.url}/input",
                    json={"content": "note milk [tool]", "conversation_id": conversation},
                    headers={**auth, "traceparent": parent},
                    timeout=30,
                ).json()
                events = until_end(stream, answer["turn_id"])
                assert events[-1][1]["type"] == "assistant.completed", events[-1]
                spans = receiver.wait_for(
                    trace_id,
                    lambda spans: (
                        sum(s.name == "chat fake-model" for s in spans) == 2
                        and any(s.name == "tools/call add_note" for s in spans)
                        and connected(spans)
                    ),
                )
    seen = [json.loads(line) for line in Path(f"{expert.log_path}.meta").read_text().splitlines()]
    assert len(seen) == 1 and seen[0]["meta"]["traceparent"].split("-")[1] == trace_id
    # The HTTP requests of the call carry it too (the W3C header, for proxies and HTTP-level tracing).
    headers = Path(f"{expert.log_path}.traceparent").read_text().split()
    assert trace_id in {value.split("-")[1] for value in headers}  # (its registration has its own trace)
    turn = next(span for span in spans if span.name == "cortex.turn")
    assert turn.service == "cortex-turn-worker"
    chats = [span for span in spans if span.name == "chat fake-model"]
    assert all(span.parent_id == turn.span_id for span in chats)
    model = [json.loads(line) for line in llm_log.read_text().splitlines()]
    assert sorted(span.attributes["gen_ai.usage.input_tokens"] for span in chats) == sorted(
        entry["usage"]["prompt_tokens"] for entry in model
    )
    assert {span.attributes["gen_ai.request.model"] for span in chats} == {"fake-model"}
    assert all(span.attributes["gen_ai.operation.name"] == "chat" for span in chats)
    call = next(span for span in spans if span.name == "tools/call add_note")
    assert call.attributes["mcp.method.name"] == "tools/call" and call.service == "cortex-turn-worker"
    print(tree(spans))
    time.sleep(0)
