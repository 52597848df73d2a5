"""The turn worker's poll and claim with many queued turns (issue 16, "claims that scale").

    .venv/bin/python -m bench.turns --claims                  # SQLite
    scripts/with_postgres.sh .venv/bin/python -m bench.turns --claims

One user ("blocked") has TURN_MAX_RUNNING_PER_USER turns running (leases held by another worker)
and N queued turns over CONVERSATIONS conversations; 10 other users each have one runnable turn.
Measured in this process, on the real database, through the real services:
- poll: `turns_due_exist()`, what the worker runs every TURN_POLL_MS;
- claim: `turns_claim(limit=64)`, which starts the 10 runnable turns (rolled back each time, so
  every round sees the same state).
Then a real `manage.py turn_worker` runs, the 10 users post again, and the time from each input
to its turn's start is measured (target: within 1 s).
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from typing import Any

OTHERS = 10


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(call: Any, *, rounds: int, budget: float) -> dict[str, float]:
    """Wall time, and this process's CPU time (on a loaded machine, the wall time also counts the
    waits for a core; on SQLite the query runs in this process, so its CPU time is the work)."""
    samples: list[float] = []
    cpu: list[float] = []
    stop = time.monotonic() + budget
    while len(samples) < rounds and (not samples or time.monotonic() < stop):
        started, started_cpu = time.perf_counter(), time.process_time()
        call()
        samples.append(1000 * (time.perf_counter() - started))
        cpu.append(1000 * (time.process_time() - started_cpu))
    return {
        "rounds": len(samples),
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(_percentile(samples, 0.99), 2),
        "cpu_p50_ms": round(statistics.median(cpu), 2),
        "cpu_p99_ms": round(_percentile(cpu, 0.99), 2),
    }


def _inputs(users: list[Any], conversations: list[Any], content: str) -> list[str]:
    from workspaces.services import InputRequest, messages_create

    requests = [
        InputRequest(sender=user, content=content, conversation_id=conversation.id)
        for user, conversation in zip(users, conversations, strict=True)
    ]
    turn_ids = []
    for outcome in messages_create(requests=requests):
        assert not isinstance(outcome, Exception), outcome
        turn_ids.append(outcome[0]["turn_id"])
    return turn_ids


def run(*, queued: int, conversations: int, rounds: int, start_worker: Any) -> dict[str, Any]:
    """In a configured Django process whose database is fresh."""
    from django.conf import settings
    from django.db import transaction

    from accounts.models import User
    from turns import services
    from turns.models import Turn
    from workspaces.services import conversation_create, workspace_create

    blocked = User.objects.create_user(email="blocked@example.com", password="bench-password-0123456789")
    space = workspace_create(owner=blocked, name="blocked")
    threads = [
        conversation_create(workspace=space, creator=blocked, topic=f"c{n}", responder="echo")
        for n in range(conversations)
    ]
    batch = 500
    for start in range(0, queued, batch):
        count = min(batch, queued - start)
        picked = [threads[(start + n) % conversations] for n in range(count)]
        _inputs([blocked] * count, picked, "queued")
    cap = settings.CORTEX["TURN_MAX_RUNNING_PER_USER"]
    rows, _ = services.turns_claim(owner="bench-elsewhere", limit=cap)  # the blocked user's share, held
    assert len(rows) == cap, len(rows)
    others = [User.objects.create_user(email=f"other{n}@example.com", password="x" * 20) for n in range(OTHERS)]
    their = [
        conversation_create(workspace=workspace_create(owner=user, name="w"), creator=user, topic="t", responder="echo")
        for user in others
    ]
    _inputs(others, their, "runnable")
    queued_now = Turn.objects.filter(status=Turn.Status.QUEUED).count()

    def claim() -> None:
        with transaction.atomic():
            started, _live = services.turns_claim(owner="bench", limit=64)
            assert len(started) == OTHERS, len(started)
            transaction.set_rollback(True)

    result: dict[str, Any] = {"queued": queued_now, "conversations": conversations}
    result["poll"] = _timed(services.turns_due_exist, rounds=rounds, budget=20)
    result["claim"] = _timed(claim, rounds=rounds, budget=20)
    if os.environ.get("BENCH_CLAIM_PROFILE"):  # cProfile of the claim alone, written to that path
        import cProfile

        profile = cProfile.Profile()
        profile.runcall(lambda: [claim() for _ in range(rounds)])
        profile.dump_stats(os.environ["BENCH_CLAIM_PROFILE"])
        from django.db import connection

        spent: dict[str, list[float]] = {}

        def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            started = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                spent.setdefault(re.sub(r"SAVEPOINT \S+", "SAVEPOINT", sql[:150]), []).append(
                    1000 * (time.perf_counter() - started)
                )

        with connection.execute_wrapper(timed):
            for _ in range(rounds):
                claim()
        for sql, times in sorted(spent.items(), key=lambda item: -sum(item[1])):
            print(f"{sum(times) / rounds:7.3f} ms/claim  {len(times) / rounds:4.1f}x  {sql}", file=sys.stderr)
    if os.environ.get("BENCH_CLAIM_EXPLAIN"):  # PostgreSQL: each statement of one claim, EXPLAIN ANALYZEd
        _explain(claim)
    result["others_started_max_s"] = None  # not within a minute
    with start_worker():
        deadline = time.monotonic() + 60
        while Turn.objects.filter(user__in=others, status__in=["queued", "running"]).exists():
            if time.monotonic() > deadline:
                return result  # the other users' first turns did not even finish
            time.sleep(0.05)
        posted = time.monotonic()
        turn_ids = _inputs(others, their, "second")
        waits: dict[str, float] = {}
        while len(waits) < OTHERS and time.monotonic() - posted < 60:
            for turn_id in Turn.objects.filter(id__in=turn_ids).exclude(status="queued").values_list("id", flat=True):
                waits.setdefault(str(turn_id), time.monotonic() - posted)
            time.sleep(0.005)
        result["others_started_max_s"] = round(max(waits.values()), 3) if len(waits) == OTHERS else None
    return result


def _explain(claim: Any) -> None:
    """The plan and timing of each statement of one claim (PostgreSQL), each run again under
    `EXPLAIN (ANALYZE, BUFFERS)` in the claim's own rolled-back transaction, printed to stderr."""
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        return
    statements: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not sql.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        claim()
    for sql, params in statements:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            transaction.set_rollback(True)
        print(f"--- {sql[:200]}\n{plan}\n", file=sys.stderr)


def database_label() -> str:
    return "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
