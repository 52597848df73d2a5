"""Assistant turns against real processes on 127.0.0.1: one core (uvicorn, as `run_cortex` starts
it), one `manage.py turn_worker` relaying to it (no Redis), a fake OpenAI-compatible model.

`.venv/bin/python -m bench.turns` (SQLite), `scripts/with_postgres.sh .venv/bin/python -m bench.turns`;
`--claims` runs (3) alone.

1. First delta: TURNS `llm` turns one after another, one SSE stream; for each, the time from the
   fake model sending its first chunk (its clock, `time.time()`, logged per request) to the first
   `assistant.delta` parsed on the stream. Target: under 50 ms.
2. Fan-out: CONCURRENT users, each with an `echo` conversation and STREAMS SSE streams, post one
   input each at once: CONCURRENT turns run together in the worker. Every stream must get its
   turn's deltas exactly once, in order, adding up to the input (nothing lost or duplicated), and
   only its own user's events. Delivery latency: an event's `timestamp` (set by the worker just
   before its commit) to its arrival on a stream.
3. The inbox (its own stack, the worker at the default TURN_POLL_MS of 100 ms, the notes expert
   as a process): WAITING direct calls of `add_note` (an `ask` tool) in as many conversations wait
   for approval at once; the worker's memory (VmRSS), threads and open sockets are read before and
   after (a waiting turn should cost none of them). Then ANSWERED of them are approved one after
   another: the time from sending the answer to the worker's `tool.call` event (its `timestamp`,
   set just before the call is made) and to that event's arrival on the stream.
   Target: p99 under 250 ms.
4. Claims (`bench.turn_claims`): the worker's poll and claim with 10,000 queued turns (`--claims
   --queued 1000,2000,10000` for a series) of one user blocked behind their running-turn cap, and
   10 other users' turns runnable. Target: p99 <= 10 ms; the others' turns start within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx2

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench.streaming import RawSSE, cpu_seconds, percentile
from tests.experts.conftest import notes_expert
from tests.servers import (
    core_server,
    fake_llm_server,
    free_port,
    fresh_database,
    manage,
    manage_command,
    running,
    server_env,
)

PASSWORD = "bench-password-0123456789"
ENV = {
    "LOG_LEVEL": "WARNING",
    "ACCESS_LOG": "0",
    "MEMORY_DRAIN_ON_COMMIT": "0",
    "INPUT_RATE": "1000000/min",
    "LOGIN_RATE": "1000000/min",
    "STREAMS_PER_USER": "1000000",
    "TURN_POLL_MS": "20",
    # No cognition service: the llm turns answer without memory (the worker's call fails fast).
    "COGNITION_URL": f"http://127.0.0.1:{free_port()}/mcp",
    "TURN_CONTEXT_ITEMS": "0",
    "CORTEX_LLM_MODEL": "fake-model",
    "CORTEX_LLM_API_KEY": "bench",
}
TERMINAL = {"assistant.completed", "assistant.failed", "assistant.cancelled"}


SHELL_PRELUDE = (
    "import json\n"
    "from accounts.models import User\n"
    "from workspaces.services import workspace_create, conversation_create\n"
)


def setup(env: dict[str, str], users: int) -> dict[str, str]:
    """Users u0..uN-1, each with a workspace and an `echo` conversation; u0 also an `llm` one."""
    out = manage(
        "shell",
        "-c",
        SHELL_PRELUDE + "ids = {}\n"
        f"for n in range({users}):\n"
        f"    u = User.objects.create_user(email=f'u{{n}}@example.com', password={PASSWORD!r})\n"
        "    w = workspace_create(owner=u, name='bench')\n"
        "    ids[f'echo{n}'] = str(conversation_create(workspace=w, creator=u, topic='echo', responder='echo').id)\n"
        "    if n == 0:\n"
        "        ids['llm'] = str(conversation_create(workspace=w, creator=u, topic='llm', responder='llm').id)\n"
        "print(json.dumps(ids))\n",
        env=env,
    )
    return json.loads(out.strip().splitlines()[-1])


def parse(frame: bytes) -> tuple[int, dict] | None:
    fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line and not line.startswith(b":"))
    if b"data" not in fields or b"id" not in fields:
        return None
    return int(fields[b"id"]), json.loads(fields[b"data"])


async def login(client: httpx2.AsyncClient, n: int) -> tuple[str, str]:
    """(access token, user id)"""
    response = await client.post("/auth/login", json={"email": f"u{n}@example.com", "password": PASSWORD})
    response.raise_for_status()
    return response.json()["access_token"], response.json()["claims"]["oid"]


async def first_delta(port: int, llm_log: Path, conversation_id: str, turns: int) -> dict:
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        token, _ = await login(client, 0)
        stream = RawSSE(port, token)
        await stream.open()
        frames = stream.frames()
        arrivals: list[float] = []
        for n in range(turns):
            body = {"content": f"latency probe {n}", "conversation_id": conversation_id}
            response = await client.post("/input", json=body, headers={"Authorization": f"Bearer {token}"})
            turn_id = response.json()["turn_id"]
            first = None
            async for frame in frames:
                parsed = parse(frame)
                if parsed is None or parsed[1].get("data", {}).get("turn_id") != turn_id:
                    continue
                if parsed[1]["type"] == "assistant.delta" and first is None:
                    first = time.time()
                if parsed[1]["type"] in TERMINAL:
                    break
            assert first is not None, f"turn {n}: no delta"
            arrivals.append(first)
        stream.close()
    requests = [json.loads(line) for line in llm_log.read_text().splitlines()]
    sent = {r["body"]["messages"][-1]["content"]: r["first_chunk_at"] for r in requests}
    latencies = [arrivals[n] - sent[f"latency probe {n}"] for n in range(turns)]
    return {
        "turns": turns,
        "first_delta_ms_p50": round(1000 * percentile(latencies, 0.5), 1),
        "first_delta_ms_p95": round(1000 * percentile(latencies, 0.95), 1),
        "first_delta_ms_max": round(1000 * max(latencies), 1),
        "under_50ms": sum(1 for value in latencies if value < 0.050),
    }


async def fanout(port: int, ids: dict[str, str], users: int, streams_each: int, words: int) -> dict:
    content = [" ".join(f"u{n}w{k}" for k in range(words)) for n in range(users)]
    async with httpx2.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=60, limits=httpx2.Limits(max_connections=64)
    ) as client:
        logins = [await login(client, n) for n in range(users)]
        tokens = [token for token, _ in logins]
        streams = [[RawSSE(port, tokens[n]) for _ in range(streams_each)] for n in range(users)]
        for row in streams:
            await asyncio.gather(*(stream.open() for stream in row))
        turn_ids: list[str] = [""] * users
        posted = asyncio.Event()
        latencies: list[float] = []
        report = {"lost": 0, "duplicates": 0, "out_of_order": 0, "foreign": 0, "incomplete": 0, "deltas": 0}

        async def follow(n: int, stream: RawSSE) -> None:
            seen_ids: set[int] = set()
            last = 0
            text: list[str] = []
            async for frame in stream.frames():
                parsed = parse(frame)
                if parsed is None:
                    continue
                event_id, event = parsed
                now = time.time()
                if event_id in seen_ids:
                    report["duplicates"] += 1
                if event_id < last:
                    report["out_of_order"] += 1
                seen_ids.add(event_id)
                last = max(last, event_id)
                if event["user_id"] != logins[n][1]:
                    report["foreign"] += 1
                await posted.wait()
                if event.get("data", {}).get("turn_id") != turn_ids[n]:
                    continue
                latencies.append(now - datetime.fromisoformat(event["timestamp"]).timestamp())
                if event["type"] == "assistant.delta":
                    text.append(event["data"]["text"])
                    report["deltas"] += 1
                if event["type"] in TERMINAL:
                    break
            got = "".join(text)
            if got != content[n]:
                report["lost" if len(got) < len(content[n]) else "duplicates"] += 1

        followers = [asyncio.create_task(follow(n, s)) for n in range(users) for s in streams[n]]
        start = time.monotonic()

        async def post(n: int) -> None:
            body = {"content": content[n], "conversation_id": ids[f"echo{n}"]}
            response = await client.post("/input", json=body, headers={"Authorization": f"Bearer {tokens[n]}"})
            turn_ids[n] = response.json()["turn_id"]

        await asyncio.gather(*(post(n) for n in range(users)))
        posted.set()
        try:
            await asyncio.wait_for(asyncio.gather(*followers), timeout=120)
        except TimeoutError:
            report["incomplete"] = sum(1 for task in followers if not task.done())
        elapsed = time.monotonic() - start
        for row in streams:
            for stream in row:
                stream.close()
    return {
        "turns": users,
        "streams": users * streams_each,
        "words_per_turn": words,
        **report,
        "seconds": round(elapsed, 2),
        "delivery_ms_p50": round(1000 * percentile(latencies, 0.5), 1),
        "delivery_ms_p99": round(1000 * percentile(latencies, 0.99), 1),
        "events_delivered": len(latencies),
    }


def process_cost(pid: int) -> dict:
    """The worker's resident memory, threads and open sockets (its connections)."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    sockets = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            sockets += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return {
        "rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
        "threads": int(status["Threads"]),
        "sockets": sockets,
    }


def setup_inbox(env: dict[str, str], conversations: int) -> dict:
    """User u0 with one workspace and `conversations` conversations (no responder: direct calls)."""
    out = manage(
        "shell",
        "-c",
        SHELL_PRELUDE + f"u = User.objects.create_user(email='u0@example.com', password={PASSWORD!r})\n"
        "w = workspace_create(owner=u, name='bench')\n"
        f"ids = [str(conversation_create(workspace=w, creator=u, topic=f'c{{n}}').id) for n in range({conversations})]\n"
        "print(json.dumps({'workspace': str(w.id), 'conversations': ids}))\n",
        env=env,
    )
    return json.loads(out.strip().splitlines()[-1])


async def inbox(port: int, notes_url: str, setup_ids: dict, worker_pid: int, waiting: int, answered: int) -> dict:
    async with httpx2.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=60, limits=httpx2.Limits(max_connections=32)
    ) as client:
        token, _ = await login(client, 0)
        auth = {"Authorization": f"Bearer {token}"}
        registered = await client.post(
            f"/config/workspace/{setup_ids['workspace']}/experts",
            json={"name": "notes", "url": f"{notes_url}/mcp"},
            headers=auth,
        )
        registered.raise_for_status()
        await asyncio.sleep(1)
        before = process_cost(worker_pid)
        semaphore = asyncio.Semaphore(16)
        turn_ids: list[str] = []

        async def post(n: int, conversation_id: str) -> None:
            async with semaphore:
                body = {"content": f'/notes add_note {{"title": "bench {n}"}}', "conversation_id": conversation_id}
                response = await client.post("/input", json=body, headers=auth)
                response.raise_for_status()
                turn_ids.append(response.json()["turn_id"])

        start = time.monotonic()
        await asyncio.gather(*(post(n, c) for n, c in enumerate(setup_ids["conversations"][:waiting])))
        items: list[dict] = []
        while time.monotonic() - start < 600:
            items = (await client.get("/inbox", headers=auth)).json()["items"]
            if len(items) >= waiting:
                break
            await asyncio.sleep(0.5)
        all_waiting_s = time.monotonic() - start
        await asyncio.sleep(2)  # settled: whatever the worker allocated for them is still held now
        after = process_cost(worker_pid)
        stream = RawSSE(port, token)
        await stream.open()
        frames = stream.frames()
        to_call: list[float] = []
        to_stream: list[float] = []
        to_answered: list[float] = []  # the answer's own request (the core's side)
        committed_to_call: list[float] = []  # the worker's side: from the answer's commit
        for item in items[:answered]:
            sent = time.time()
            response = await client.post(f"/inbox/{item['id']}/answer", json={"decision": "approve"}, headers=auth)
            response.raise_for_status()
            to_answered.append(time.time() - sent)
            committed = datetime.fromisoformat(response.json()["item"]["answered_at"]).timestamp()
            async for frame in frames:
                parsed = parse(frame)
                if parsed is None:
                    continue
                event = parsed[1]
                if event["type"] == "tool.call" and event["data"]["turn_id"] == item["turn_id"]:
                    to_stream.append(time.time() - sent)
                    called = datetime.fromisoformat(event["timestamp"]).timestamp()
                    to_call.append(called - sent)
                    committed_to_call.append(called - committed)
                    break
        stream.close()
    return {
        "waiting": len(items),
        "seconds_until_all_waiting": round(all_waiting_s, 1),
        "worker_before": before,
        "worker_with_all_waiting": after,
        "answered": len(to_call),
        "answer_to_tool_call_ms_p50": round(1000 * percentile(to_call, 0.5), 1),
        "answer_to_tool_call_ms_p99": round(1000 * percentile(to_call, 0.99), 1),
        "answer_to_tool_call_ms_max": round(1000 * max(to_call), 1),
        "answer_request_ms_p50": round(1000 * percentile(to_answered, 0.5), 1),
        "answer_request_ms_p99": round(1000 * percentile(to_answered, 0.99), 1),
        "answer_committed_to_tool_call_ms_p50": round(1000 * percentile(committed_to_call, 0.5), 1),
        "answer_committed_to_tool_call_ms_p99": round(1000 * percentile(committed_to_call, 0.99), 1),
        "answer_to_stream_ms_p50": round(1000 * percentile(to_stream, 0.5), 1),
        "answer_to_stream_ms_p99": round(1000 * percentile(to_stream, 0.99), 1),
    }


def run_inbox(waiting: int, answered: int) -> dict:
    with fresh_database() as db_env:
        env = server_env(
            **db_env,
            **{
                **ENV,
                "TURN_POLL_MS": "100",  # the default: the target holds with the worker's polling
                "INBOX_MAX_OPEN_PER_USER": str(waiting + 10),
                "TURN_MAX_RUNNING_PER_USER": "64",
            },
        )
        ids = setup_inbox(env, waiting)
        core = core_server(env=env, server="uvicorn")
        core.argv[3:3] = ["--loop", "uvloop", "--http", "httptools", "--lifespan", "off"]
        notes = notes_expert(env, jwks_url=f"{core.url}/.well-known/jwks.json")
        worker = manage_command(
            "turn_worker", env={**env, "CORTEX_CORE_URL": core.url}, port=0, ready_line="turn worker: running"
        )
        with running(core), running(notes), running(worker):
            return asyncio.run(inbox(core.port, notes.url, ids, worker.process.pid, waiting, answered))


CLAIM_ENV = {"LOG_LEVEL": "WARNING", "TURN_LEASE_SECONDS": "3600", "ECHO_DELAY_MS": "0", "TURN_CONTEXT_ITEMS": "0"}


def claims_one(queued: int, conversations: int, rounds: int) -> dict:
    """In a child process whose environment points at a fresh database (see `claims`)."""
    import contextlib

    import django

    django.setup()
    from bench import turn_claims

    @contextlib.contextmanager
    def start_worker():
        worker = manage_command("turn_worker", env=server_env(), port=0, ready_line="turn worker: running")
        with running(worker):
            yield

    return turn_claims.run(queued=queued, conversations=conversations, rounds=rounds, start_worker=start_worker)


def writes_one(rounds: int) -> dict:
    """In a child process whose environment points at a fresh database (see `writes`)."""
    import django

    django.setup()
    from bench import turn_writes

    return turn_writes.run(rounds=rounds)


def writes(rounds: int) -> int:
    import subprocess

    from bench import turn_claims

    with fresh_database() as db_env:
        argv = [sys.executable, "-m", "bench.turns", "--writes-one", "--rounds", str(rounds)]
        done = subprocess.run(argv, env=server_env(**db_env, **CLAIM_ENV), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        return 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    print(f"\n{turn_claims.database_label()}: write | statements | wall p50 / p99 ms | CPU p50 / p99 ms")
    for name in ("tool_call", "tool_result", "ending"):
        r = result[name]
        print(f"{name} | {r['statements']} | {r['p50_ms']} / {r['p99_ms']} | {r['cpu_p50_ms']} / {r['cpu_p99_ms']}")
    return 0


def claims(sizes: list[int], conversations: int, rounds: int, out: Path) -> int:
    import subprocess

    from bench import turn_claims

    results = []
    for size in sizes:
        with fresh_database() as db_env:
            env = server_env(**db_env, **CLAIM_ENV)
            argv = [sys.executable, "-m", "bench.turns", "--claims-one", str(size)]
            argv += ["--conversations", str(conversations), "--rounds", str(rounds)]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                print(done.stdout, done.stderr, file=sys.stderr)
                return 1
            if os.environ.get("BENCH_CLAIM_PROFILE") or os.environ.get("BENCH_CLAIM_EXPLAIN"):  # (turn_claims)
                print(done.stderr, file=sys.stderr)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    print(
        f"\n{turn_claims.database_label()}: queued turns | poll p50 / p99 ms | claim p50 / p99 ms | "
        "poll CPU p50 / p99 ms | claim CPU p50 / p99 ms | others started (s)"
    )
    for r in results:
        print(
            f"{r['queued']:,} | {r['poll']['p50_ms']} / {r['poll']['p99_ms']} | "
            f"{r['claim']['p50_ms']} / {r['claim']['p99_ms']} | "
            f"{r['poll'].get('cpu_p50_ms')} / {r['poll'].get('cpu_p99_ms')} | "
            f"{r['claim'].get('cpu_p50_ms')} / {r['claim'].get('cpu_p99_ms')} | {r['others_started_max_s']}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"database": turn_claims.database_label(), "claims": results}, indent=2))
    slow = [
        r["queued"]
        for r in results
        if r["poll"]["p99_ms"] > 10 or r["claim"]["p99_ms"] > 10 or (r["others_started_max_s"] or 99) > 1
    ]
    if slow:
        print(f"claims missed the target (p99 <= 10 ms, others started within 1 s) at: {slow}", flush=True)
    return 1 if slow else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.turns", description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", action="store_true", help="only (3): poll and claim with many queued turns")
    parser.add_argument("--queued", default="1000,2000,10000", help="(3) queued turn counts, comma-separated")
    parser.add_argument("--conversations", type=int, default=100, help="(3) the blocked user's conversations")
    parser.add_argument("--rounds", type=int, default=200, help="(3) timed polls and claims per size")
    parser.add_argument("--claims-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--writes", action="store_true", help="only: the worker's writes (tool.call, ending) timed")
    parser.add_argument("--writes-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latency-turns", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--streams", type=int, default=10, help="SSE streams per turn")
    parser.add_argument("--words", type=int, default=40, help="echo chunks per turn (ECHO_DELAY_MS apart)")
    parser.add_argument("--echo-delay-ms", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=1000, help="turns waiting in the inbox at once")
    parser.add_argument("--answered", type=int, default=200, help="of them approved one by one (latency)")
    parser.add_argument("--inbox-only", action="store_true", help="only the inbox part (3)")
    parser.add_argument("--out", default="var/bench/turns.json")
    args = parser.parse_args(argv if argv is not None else [])
    if args.claims_one:
        print(json.dumps(claims_one(args.claims_one, args.conversations, args.rounds)))
        return 0
    if args.writes_one:
        print(json.dumps(writes_one(args.rounds)))
        return 0
    if args.writes:
        return writes(args.rounds)
    if args.claims:
        sizes = [int(size) for size in args.queued.split(",")]
        return claims(sizes, args.conversations, args.rounds, Path("var/bench/turn-claims.json"))
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    print(f"database={database} concurrent={args.concurrent} streams={args.streams} words={args.words}", flush=True)
    llm_log = Path(tempfile.mkdtemp(prefix="cortex-bench-llm-")) / "requests.jsonl"
    result: dict = {"database": database}
    if args.waiting:
        result["inbox"] = run_inbox(args.waiting, args.answered)
        print("inbox:", json.dumps(result["inbox"]), flush=True)
    if args.inbox_only:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        return 0 if result["inbox"]["waiting"] >= args.waiting else 1
    with fresh_database() as db_env:
        env = server_env(**db_env, **ENV, ECHO_DELAY_MS=str(args.echo_delay_ms))
        ids = setup(env, args.concurrent)
        fake = fake_llm_server(env=env, log=llm_log)
        core = core_server(env=env, server="uvicorn")
        core.argv[3:3] = ["--loop", "uvloop", "--http", "httptools", "--lifespan", "off"]
        worker_env = {**env, "CORTEX_CORE_URL": core.url, "CORTEX_LLM_BASE_URL": f"{fake.url}/v1"}
        worker = manage_command("turn_worker", env=worker_env, port=0, ready_line="turn worker: running")
        with running(fake), running(core), running(worker):
            result["first_delta"] = asyncio.run(first_delta(core.port, llm_log, ids["llm"], args.latency_turns))
            print("first delta:", json.dumps(result["first_delta"]), flush=True)
            worker_cpu = cpu_seconds(worker.process.pid)
            result["fanout"] = asyncio.run(fanout(core.port, ids, args.concurrent, args.streams, args.words))
            result["fanout"]["worker_cpu_seconds"] = round(cpu_seconds(worker.process.pid) - worker_cpu, 1)
            print("fan-out:", json.dumps(result["fanout"]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    fan = result["fanout"]
    failed = fan["lost"] or fan["duplicates"] or fan["out_of_order"] or fan["incomplete"] or fan["foreign"]
    claimed = claims([10_000], args.conversations, args.rounds, Path("var/bench/turn-claims.json"))
    return 1 if failed or claimed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
