"""Expert tasks waiting in one turn worker: what a waiting task costs, and how soon its result follows
its completion. Real processes on 127.0.0.1: one core (uvicorn), one `manage.py turn_worker`, and
the SDK-built expert of tests/experts/task_expert.py (2026-07-28) whose `research` tool runs as a
task and answers `tasks/get` with `pollInterval` POLL_MS.

    .venv/bin/python -m bench.tasks [--tasks 200] [--poll-ms 1000] [--seconds 45]

1. The worker's memory (VmRSS), threads and open sockets with 0, then 50, then TASKS tasks
   waiting (each a direct call `/lab research`, its turn `waiting` between polls).
2. Completion to `tool.result`: each task completes `--seconds` after it started (the expert logs
   the moment, `time.time()`); the delay is the `tool.result` event's timestamp (set by the worker
   just before its commit) minus that moment: at most one poll interval plus a claim, ideally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime

import httpx2

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench.streaming import RawSSE, percentile
from bench.turns import ENV, login, parse, process_cost, setup_inbox
from tests.experts.conftest import task_expert
from tests.servers import core_server, fresh_database, manage_command, running, server_env


async def measure(port: int, expert, setup_ids: dict, worker_pid: int, tasks: int, seconds: float) -> dict:
    async with httpx2.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=60, limits=httpx2.Limits(max_connections=32)
    ) as client:
        token, _ = await login(client, 0)
        auth = {"Authorization": f"Bearer {token}"}
        registered = await client.post(
            f"/config/workspace/{setup_ids['workspace']}/experts",
            json={"name": "lab", "url": expert.url, "auth": "none", "tool_policy": {"research": "auto"}},
            headers=auth,
        )
        registered.raise_for_status()
        stream = RawSSE(port, token)
        await stream.open()
        frames = stream.frames()
        task_of: dict[str, str] = {}  # turn id -> task id
        results: dict[str, float] = {}  # task id -> tool.result timestamp
        seen_all = asyncio.Event()
        wanted = {"count": 0}

        async def follow() -> None:
            async for frame in frames:
                parsed = parse(frame)
                if parsed is None:
                    continue
                event = parsed[1]
                data = event.get("data", {})
                if event["type"] == "tool.task" and data.get("status") == "working":
                    task_of.setdefault(data["turn_id"], data["task_id"])
                    if len(task_of) >= wanted["count"]:
                        seen_all.set()
                elif event["type"] == "tool.result" and data.get("turn_id") in task_of:
                    results[task_of[data["turn_id"]]] = datetime.fromisoformat(event["timestamp"]).timestamp()

        follower = asyncio.create_task(follow())
        semaphore = asyncio.Semaphore(16)

        async def post(n: int) -> None:
            async with semaphore:
                body = {
                    "content": f'/lab research {{"topic": "t{n}", "seconds": {seconds}}}',
                    "conversation_id": setup_ids["conversations"][n],
                }
                response = await client.post("/input", json=body, headers=auth)
                response.raise_for_status()

        costs = {"0": process_cost(worker_pid)}
        started = 0
        for level in sorted({min(50, tasks), tasks}):
            wanted["count"], seen_all = level, asyncio.Event()
            if len(task_of) >= level:
                seen_all.set()
            await asyncio.gather(*(post(n) for n in range(started, level)))
            started = level
            await asyncio.wait_for(seen_all.wait(), timeout=300)
            await asyncio.sleep(2)  # settled, still waiting (the tasks run `seconds`)
            costs[str(level)] = process_cost(worker_pid)
        deadline = time.monotonic() + seconds + 120
        while len(results) < tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        follower.cancel()
        stream.close()
    completed = {entry["completed"]: entry["at"] for entry in expert.log() if "completed" in entry}
    delays = [results[task_id] - completed[task_id] for task_id in results if task_id in completed]
    return {
        "tasks": tasks,
        "worker_by_tasks_waiting": costs,
        "results": len(results),
        "completion_to_tool_result_ms_p50": round(1000 * percentile(delays, 0.5), 1) if delays else None,
        "completion_to_tool_result_ms_p99": round(1000 * percentile(delays, 0.99), 1) if delays else None,
        "completion_to_tool_result_ms_max": round(1000 * max(delays), 1) if delays else None,
    }


def run(tasks: int, poll_ms: int, seconds: float) -> dict:
    with fresh_database() as db_env:
        env = server_env(
            **db_env,
            **{**ENV, "TURN_POLL_MS": "100", "TURN_MAX_RUNNING_PER_USER": "64", "INBOX_MAX_OPEN_PER_USER": "1000"},
        )
        ids = setup_inbox(env, tasks)
        core = core_server(env=env, server="uvicorn")
        worker = manage_command(
            "turn_worker", env={**env, "CORTEX_CORE_URL": core.url}, port=0, ready_line="turn worker: running"
        )
        with task_expert(poll_ms=poll_ms) as expert, running(core), running(worker):
            report = asyncio.run(measure(core.port, expert, ids, worker.process.pid, tasks, seconds))
    return {"poll_ms": poll_ms, "task_seconds": seconds, **report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--poll-ms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=45.0)
    options = parser.parse_args(argv)
    print(json.dumps(run(options.tasks, options.poll_ms, options.seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
