"""The turn worker's writes, one at a time (issue 29: a resumed turn's `tool.call` waited behind the
previous turn's ending on the worker's one database thread).

    .venv/bin/python -m bench.turns --writes --rounds 200                   # SQLite
    scripts/with_postgres.sh .venv/bin/python -m bench.turns --writes --rounds 200

Each round: an input opens a turn in one of 10 conversations (2 participants each), the turn is
claimed, then `turns_write` runs as the worker calls it: the `tool.call` (events, the lease
renewed), the `tool.result`, and the ending (a delta, `assistant.completed`, the answer, its usage).
Each write's wall and CPU time (this process: on SQLite the query runs here) and its statements
(SAVEPOINT/RELEASE not counted). The turns are not rolled back: each round's state is a real one.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

CONVERSATIONS = 10


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(*, rounds: int) -> dict[str, Any]:
    """In a configured Django process whose database is fresh."""
    from django.db import connection

    from accounts.models import User
    from turns import services
    from turns.services import TurnWrite
    from usage.services import UsageDelta
    from workspaces.models import Conversation
    from workspaces.services import InputRequest, conversation_create, messages_create, workspace_create

    owner = User.objects.create_user(email="writes@example.com", password="bench-password-0123456789")
    other = User.objects.create_user(email="other@example.com", password="bench-password-0123456789")
    space = workspace_create(owner=owner, name="writes")
    places = []
    for n in range(CONVERSATIONS):
        place = conversation_create(workspace=space, creator=owner, topic=f"c{n}", responder="echo")
        Conversation.participants.through.objects.get_or_create(conversation_id=place.id, user_id=other.id)
        places.append(place)
    statements = [0]

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not sql.startswith(("SAVEPOINT", "RELEASE")):
            statements[0] += 1
        return execute(sql, params, many, context)

    def timed(call: Any) -> tuple[float, float, int]:
        statements[0] = 0
        started, started_cpu = time.perf_counter(), time.process_time()
        with connection.execute_wrapper(count):
            call()
        return 1000 * (time.perf_counter() - started), 1000 * (time.process_time() - started_cpu), statements[0]

    samples: dict[str, list[tuple[float, float, int]]] = {"tool_call": [], "tool_result": [], "ending": []}
    for n in range(rounds):
        messages_create(
            requests=[InputRequest(sender=owner, content=f"q{n}", conversation_id=places[n % CONVERSATIONS].id)]
        )
        [row], _ = services.turns_claim(owner="bench", limit=1)
        call = {"call_id": f"c{n}", "name": "notes__add", "arguments": {"text": "x" * 40}}
        writes = {
            "tool_call": TurnWrite(row.id, events=[("tool.call", call)]),
            "tool_result": TurnWrite(row.id, events=[("tool.result", {"call_id": f"c{n}", "content": "y" * 200})]),
            "ending": TurnWrite(
                row.id,
                events=[("assistant.delta", {"text": "answer"})],
                finish="completed",
                content="answer " * 20,
                usage=UsageDelta(model="m", input_tokens=100, output_tokens=50, tool_calls=1, model_requests=2),
            ),
        }
        for name, write in writes.items():
            samples[name].append(timed(lambda write=write: services.turns_write(owner="bench", writes=[write])))
    result: dict[str, Any] = {"rounds": rounds}
    for name, values in samples.items():
        wall, cpu, counts = zip(*values, strict=True)
        result[name] = {
            "statements": max(counts),
            "p50_ms": round(statistics.median(wall), 2),
            "p99_ms": round(_percentile(list(wall), 0.99), 2),
            "cpu_p50_ms": round(statistics.median(cpu), 2),
            "cpu_p99_ms": round(_percentile(list(cpu), 0.99), 2),
        }
    return result
