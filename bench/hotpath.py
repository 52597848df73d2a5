"""The hot paths of the performance issue, against the whole system as `make run` starts it
(`manage.py run_cortex`) in production mode (DEBUG=0, keys set, throttles and per-user limits
raised for the load), on 127.0.0.1 only, every loop bounded in count and time.

    .venv/bin/python -m bench.hotpath                  # SQLite, in-memory channel layer (the default)
    scripts/with_postgres.sh .venv/bin/python -m bench.hotpath --redis --workers 2
    .venv/bin/python -m bench.hotpath --smoke          # seconds: what `make test` runs

Workloads (each reported against the issue's target):
1. input: C clients over 10 users POST /input in closed loops for T seconds.
2. memory: seconds from the end of (1) until every accepted input is in the memory service.
3. fan-out: S SSE subscribers over 10 users; inputs posted at R/s for D seconds; every event's
   publish-to-receive latency, losses and duplicates.
4. idle: K idle SSE streams on a freshly started system; core RSS per stream; heartbeats on time.
5. resume: one stream resumes with `Last-Event-ID: 0` after N events it missed.

Writes `var/bench/hotpath[-<label>].json` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench.streaming import RawSSE, cpu_seconds, open_loop, percentile, rss_kib
from tests.servers import ROOT, create_users, free_port, fresh_database, redis_server, server_env, wait_for_port

PASSWORD = "bench-password-0123456789"
USERS = 10
LIMITS = {
    "LOG_LEVEL": "WARNING",
    "INPUT_RATE": "100000000/min",
    "TICKET_RATE": "100000000/min",
    "LOGIN_RATE": "100000000/min",
    "CONTEXT_RATE": "100000000/min",
    "STREAMS_PER_USER": "100000",
    "REPLAY_LIMIT_EVENTS": "1000000",
    # As `make run` (tests.environment turns it off for in-process tests): the core drains the
    # memory outbox itself after its commits, on a thread of its own.
    "MEMORY_DRAIN_ON_COMMIT": "1",
}


@dataclass
class Profile:
    clients: int = 32
    seconds: float = 15
    subscribers: int = 100
    rate: int = 100
    fan_seconds: float = 30
    idle: int = 5000
    heartbeat: int = 5
    resume: int = 10_000


SMOKE = Profile(clients=4, seconds=2, subscribers=10, rate=20, fan_seconds=2, idle=50, heartbeat=1, resume=300)


# --- a minimal keep-alive HTTP/1.1 client: cheap, so the load generator leaves the CPU to the server


class RawHTTP:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length, chunked = None, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while (size := int((await self.reader.readline()).strip(), 16)) > 0:
                parts.append((await self.reader.readexactly(size + 2))[:-2])
            await self.reader.readline()
            data = b"".join(parts)
        else:
            data = await self.reader.readexactly(length or 0)
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def login(port: int, email: str) -> str:
    client = RawHTTP(port)
    body = json.dumps({"email": email, "password": PASSWORD}).encode()
    status, data = await client.request("POST", "/auth/login", body, {"Content-Type": "application/json"})
    client.close()
    if status != 200:
        raise RuntimeError(f"login failed: {status} {data[:200]!r}")
    return json.loads(data)["access_token"]


def post_input(client: RawHTTP, token: str, payload: dict[str, Any]):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return client.request("POST", "/input", json.dumps(payload).encode(), headers)


# --- the system under test


@dataclass
class System:
    port: int
    group: subprocess.Popen
    env: dict[str, str]

    def pids(self) -> dict[str, int]:
        """run_cortex's children by role (the core is uvicorn; with workers, its worker processes)."""
        found: dict[str, int] = {}
        for line in subprocess.run(
            ["ps", "-o", "pid=,ppid=,args=", "--ppid", str(self.group.pid)], capture_output=True, text=True
        ).stdout.splitlines():
            pid, _ppid, args = line.split(None, 2)
            # The core is the uvicorn process; the others by their command (the turn worker, the
            # webhook worker and the notes expert were taken for the core, whichever came last).
            roles = ("uvicorn", "outbox", "memory", "cognition", "housekeeping", "turn_worker", "webhook", "notes")
            role = next((r for r in roles if r in args), "other")
            found["core" if role == "uvicorn" else role] = int(pid)
        return found

    def core_pids(self) -> list[int]:
        core = self.pids()["core"]
        children = subprocess.run(["pgrep", "-P", str(core)], capture_output=True, text=True).stdout.split()
        # uvicorn --workers: a supervisor whose spawned children serve; else the core process itself
        workers = [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        return workers or [core]


@contextlib.contextmanager
def system(env: dict[str, str], workers: int, heartbeat: int) -> Iterator[System]:
    port = free_port()
    environment = {**env, "SSE_HEARTBEAT_SECONDS": str(heartbeat)}
    argv = [
        sys.executable,
        "manage.py",
        "run_cortex",
        "--port",
        str(port),
        "--memory-port",
        str(free_port()),
        "--cognition-port",
        str(free_port()),
        "--notes-port",
        str(free_port()),
    ]
    if workers > 1:
        argv += ["--workers", str(workers)]
    log = open(Path(env.get("BENCH_LOG_DIR", "/tmp")) / f"cortex-bench-{port}.log", "wb")
    group = subprocess.Popen(argv, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60, process=group)
        time.sleep(1.0)  # the services' first connections
        yield System(port, group, environment)
    finally:
        group.send_signal(signal.SIGTERM)
        try:
            group.wait(timeout=20)
        except subprocess.TimeoutExpired:
            group.kill()
        log.close()


def memory_count(env: dict[str, str]) -> int:
    query = "SELECT count(*) FROM mcp_services_memoryitem"
    if env.get("DATABASE_URL"):
        import psycopg

        with psycopg.connect(env["DATABASE_URL"]) as connection:
            return connection.execute(query).fetchone()[0]
    with contextlib.closing(sqlite3.connect(env["SQLITE_PATH"], timeout=10)) as connection:
        return connection.execute(query).fetchone()[0]


def stats_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {
        "p50": round(1000 * percentile(values, 0.50), 1),
        "p95": round(1000 * percentile(values, 0.95), 1),
        "p99": round(1000 * percentile(values, 0.99), 1),
        "max": round(1000 * max(values), 1),
    }


@contextlib.contextmanager
def profiled(sut: System, phase: str, seconds: float) -> Iterator[None]:
    """With BENCH_PYSPY=<dir>: py-spy samples the core (GIL holders) during the phase."""
    folder = os.environ.get("BENCH_PYSPY")
    if not folder:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    out = Path(folder) / f"{phase}.txt"
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--gil",
            "-r",
            "200",
            "-f",
            "raw",
            "-d",
            str(max(1, int(seconds))),
            "-o",
            str(out),
            "-p",
            str(sut.core_pids()[0]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.wait(timeout=seconds + 30)
        print(f"py-spy profile of the core during {phase}: {out}", flush=True)


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def thread_counters(pid: int) -> dict[int, tuple[float, int, int]]:
    """Each thread of `pid`: CPU seconds, voluntary and involuntary context switches."""
    found: dict[int, tuple[float, int, int]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
        except OSError:  # the thread ended meanwhile
            continue
        found[int(task.name)] = (
            (int(fields[11]) + int(fields[12])) / tick,
            int(status["voluntary_ctxt_switches"]),
            int(status["nonvoluntary_ctxt_switches"]),
        )
    return found


def thread_names(pid: int) -> dict[int, str]:
    """Python threads' names by native id (py-spy dump; empty without py-spy)."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return {}
    out = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    names: dict[int, str] = {}
    for line in out.splitlines():
        if line.startswith("Thread "):
            tid, _, rest = line[7:].partition(" ")
            if tid.isdigit():
                names[int(tid)] = rest.split('"')[1] if '"' in rest else "?"
    return names


def by_thread(pid: int, before: dict[int, tuple[float, int, int]], count: int) -> dict[str, dict[str, float]]:
    """BENCH_THREADS=1: the core's CPU ms and context switches per input, by thread name (summed
    over threads of one name: the waiter threads, the sync threads)."""
    after, names = thread_counters(pid), thread_names(pid)
    rows: dict[str, list[float]] = {}
    for tid, (cpu, voluntary, involuntary) in after.items():
        was = before.get(tid, (0.0, 0, 0))
        name = names.get(tid, "(native)").rstrip("_0123456789") or "?"
        row = rows.setdefault(name, [0, 0.0, 0.0, 0.0])
        row[0] += 1
        row[1] += cpu - was[0]
        row[2] += voluntary - was[1]
        row[3] += involuntary - was[2]
    n = max(1, count)
    return {
        name: {
            "threads": int(row[0]),
            "cpu_ms": round(1000 * row[1] / n, 3),
            "voluntary_switches": round(row[2] / n, 2),
            "involuntary_switches": round(row[3] / n, 2),
        }
        for name, row in sorted(rows.items(), key=lambda item: -item[1][1])
        if row[1] or row[2] or row[3]
    }


# --- workloads


async def input_load(sut: System, tokens: list[str], clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.monotonic() + seconds

    async def client(n: int) -> None:
        connection, token, i = RawHTTP(sut.port), tokens[n % len(tokens)], 0
        try:
            while time.monotonic() < stop:
                started = time.perf_counter()
                status, _ = await post_input(connection, token, {"content": f"load c{n} #{i}", "metadata": {"i": i}})
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
                i += 1
        finally:
            connection.close()

    core = sut.core_pids()
    others = {role: pid for role, pid in sut.pids().items() if role != "core"}
    threads = thread_counters(core[0]) if os.environ.get("BENCH_THREADS") else None
    others_before = {role: cpu_seconds(pid) for role, pid in others.items()}
    cpu_before, began = cpu_of(core), time.monotonic()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.monotonic() - began
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    extra: dict[str, Any] = {
        "others_cpu_ms_per_input": {
            role: round(1000 * (cpu_seconds(pid) - others_before[role]) / max(1, len(latencies)), 3)
            for role, pid in others.items()
        }
    }
    if threads is not None:
        extra["core_by_thread"] = by_thread(core[0], threads, len(latencies))
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "rps": round(ok / elapsed, 1),
        "latency_ms": stats_ms(latencies),
        "non_2xx": len(latencies) - ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "core_cpu_ms_per_input": round(1000 * (cpu_of(core) - cpu_before) / max(1, len(latencies)), 3),
        "accepted": ok,
        **extra,
    }


def memory_catch_up(sut: System, expected: int, started: float, limit: float = 60) -> dict[str, Any]:
    count = memory_count(sut.env)
    while count < expected and time.monotonic() - started < limit:
        time.sleep(0.1)
        count = memory_count(sut.env)
    return {"expected": expected, "in_memory": count, "seconds_after_run": round(time.monotonic() - started, 2)}


async def fan_out(sut: System, tokens: list[str], subscribers: int, rate: int, seconds: float) -> dict[str, Any]:
    streams = [RawSSE(sut.port, tokens[n % len(tokens)]) for n in range(subscribers)]
    for offset in range(0, subscribers, 50):
        await asyncio.gather(*(stream.open() for stream in streams[offset : offset + 50]))
    per_user = {token: sum(1 for s in streams if s.token == token) for token in tokens}
    latencies: list[float] = []
    seen: list[set[str]] = [set() for _ in streams]
    duplicates = foreign = 0
    sender_of: dict[str, str] = {}

    async def consume(index: int, stream: RawSSE) -> None:
        nonlocal duplicates, foreign
        async for frame in stream.frames():
            for line in frame.split(b"\n"):
                if line.startswith(b"data: "):
                    content = json.loads(line[6:])["data"]["content"]
                    received = time.time()
                    tag, sent = content.split()[1:3]
                    latencies.append(received - float(sent))
                    if sender_of.get(tag, stream.token) != stream.token:
                        foreign += 1
                    elif tag in seen[index]:
                        duplicates += 1
                    seen[index].add(tag)

    consumers = [asyncio.create_task(consume(n, stream)) for n, stream in enumerate(streams)]
    posts: list[tuple[int, float]] = []
    connections = [RawHTTP(sut.port) for _ in range(16)]
    free = asyncio.Queue()
    for connection in connections:
        free.put_nowait(connection)
    expected = 0

    async def post(n: int) -> None:
        nonlocal expected
        token = tokens[n % len(tokens)]
        tag = f"f{n}"
        sender_of[tag] = token
        connection = await free.get()
        try:
            started = time.perf_counter()
            status, _ = await post_input(connection, token, {"content": f"fan {tag} {time.time():.6f}"})
            posts.append((status, time.perf_counter() - started))
            if status == 200:
                expected += per_user[token]
        finally:
            free.put_nowait(connection)

    total = int(rate * seconds)
    core = sut.core_pids()
    redis = redis_pid(sut.env.get("REDIS_URL"))
    cpu_before, redis_before = cpu_of(core), cpu_of(redis)
    await open_loop(post, total, rate)
    deadline = time.monotonic() + 30
    while sum(len(s) for s in seen) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    delivered = sum(len(s) for s in seen)
    core_cpu, redis_cpu = cpu_of(core) - cpu_before, cpu_of(redis) - redis_before
    for task in consumers:
        task.cancel()
    for stream in streams:
        stream.close()
    for connection in connections:
        connection.close()
    return {
        "subscribers": subscribers,
        "posted": total,
        "post_failures": sum(1 for status, _ in posts if status != 200),
        "post_latency_ms": stats_ms([latency for _, latency in posts]),
        "expected": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "duplicates": duplicates,
        "cross_user": foreign,
        "publish_to_receive_ms": stats_ms(latencies),
        # CPU of the core process(es) (and of Redis, when there is one) while the inputs were posted
        # and delivered: the input path and the fan-out together, per input and per delivered copy.
        "core_cpu_ms_per_input": round(core_cpu * 1000 / max(1, total), 3),
        "core_cpu_ms_per_delivered": round(core_cpu * 1000 / max(1, delivered), 3),
        "redis_cpu_ms_per_input": round(redis_cpu * 1000 / max(1, total), 3) if redis else None,
    }


def redis_pid(url: str | None) -> list[int]:
    """The bench's own Redis (tests.servers.redis_server), found by its port: its CPU is counted."""
    if not url:
        return []
    port = url.rsplit(":", 1)[-1].split("/")[0]
    found = subprocess.run(["pgrep", "-f", f"redis-server.*{port}"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


async def idle_streams(sut: System, tokens: list[str], count: int, heartbeat: int) -> dict[str, Any]:
    core = sut.core_pids()
    before = sum(rss_kib(pid) for pid in core)
    streams = [RawSSE(sut.port, tokens[n % len(tokens)]) for n in range(count)]
    failed = 0
    for offset in range(0, count, 200):
        results = await asyncio.gather(*(s.open() for s in streams[offset : offset + 200]), return_exceptions=True)
        failed += sum(1 for result in results if isinstance(result, BaseException))
    await asyncio.sleep(1)
    after = sum(rss_kib(pid) for pid in core)
    sample = [s for s in streams if s.writer is not None][:: max(1, count // 50)]
    gaps: list[float] = []

    async def watch(stream: RawSSE) -> None:
        last = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(heartbeat * 3 + 1):
                async for _frame in stream.frames():
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

    await asyncio.gather(*(watch(stream) for stream in sample))
    for stream in streams:
        stream.close()
    return {
        "streams": count,
        "failed": failed,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_stream": round((after - before) / max(1, count - failed), 1),
        "heartbeat_seconds": heartbeat,
        "heartbeat_max_gap_s": round(max(gaps), 2) if gaps else None,
        "heartbeats_seen": len(gaps),
    }


async def resume(sut: System, token: str, missed: int) -> dict[str, Any]:
    connections = [RawHTTP(sut.port) for _ in range(16)]

    async def poster(n: int) -> None:
        for i in range(n, missed, len(connections)):
            status, data = await post_input(connections[n], token, {"content": f"missed {i}"})
            if status != 200:
                raise RuntimeError(f"POST /input answered {status}: {data[:200]!r}")

    await asyncio.gather(*(poster(n) for n in range(len(connections))))
    for connection in connections:
        connection.close()
    stream = RawSSE(sut.port, token, last_event_id=0)
    began = time.perf_counter()
    await stream.open()
    ids: list[int] = []
    async with asyncio.timeout(120):
        async for frame in stream.frames():
            for line in frame.split(b"\n"):
                if line.startswith(b"id: "):
                    ids.append(int(line[4:]))
            if len(ids) >= missed:
                break
    elapsed = time.perf_counter() - began
    stream.close()
    return {
        "missed": missed,
        "delivered": len(ids),
        "in_order_without_gaps": ids == list(range(1, missed + 1)),
        "seconds": round(elapsed, 3),
        "events_per_second": round(len(ids) / elapsed),
    }


# --- report


TARGETS = [
    (
        "POST /input",
        "input",
        lambda r: f"{r['rps']:,.0f} req/s, p99 {r['latency_ms']['p99']} ms, {r['non_2xx']} non-2xx",
        ">= 500 req/s, p99 <= 100 ms, 0 non-2xx (aim >= 1,000)",
    ),
    (
        "memory keeps up",
        "memory",
        lambda r: f"{r['in_memory']}/{r['expected']} in memory {r['seconds_after_run']} s after",
        "all <= 10 s after the run (aim <= 2 s)",
    ),
    (
        "fan-out",
        "fanout",
        lambda r: f"{r['lost']} lost, {r['duplicates']} dup, p99 {r['publish_to_receive_ms']['p99']} ms",
        "0 lost, p99 <= 50 ms (aim <= 20 ms)",
    ),
    (
        "idle SSE streams",
        "idle",
        lambda r: (
            f"{r['streams'] - r['failed']} held, {r['kib_per_stream']} KiB each, "
            f"max heartbeat gap {r['heartbeat_max_gap_s']} s (every {r['heartbeat_seconds']} s)"
        ),
        "5,000 at <= 20 KB each, heartbeats on time (aim 10,000 at <= 12 KB)",
    ),
    (
        "resume",
        "resume",
        lambda r: (
            f"{r['delivered']:,} of {r['missed']:,} at {r['events_per_second']:,} events/s, "
            f"in order: {r['in_order_without_gaps']}"
        ),
        ">= 20,000 events/s, in order (aim >= 50,000)",
    ),
]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# bench.hotpath: {result['label']}",
        "",
        f"{result['setup']}",
        "",
        "| workload | measured | target |",
        "|---|---|---|",
    ]
    for name, key, show, target in TARGETS:
        if key in result:
            lines.append(f"| {name} | {show(result[key])} | {target} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.hotpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long run of every workload")
    parser.add_argument("--redis", action="store_true", help="start a Redis (channel layer, shared throttles)")
    parser.add_argument("--workers", type=int, default=1, help="core processes (needs --redis above 1)")
    parser.add_argument("--only", default="input,fanout,idle,resume")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    profile = SMOKE if args.smoke else Profile()
    wanted = set(args.only.split(","))
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    label = f"{database.lower()}{'-redis' if args.redis else ''}-{args.workers}w" + ("-smoke" if args.smoke else "")
    result: dict[str, Any] = {
        "label": label,
        "setup": f"{database}, {'Redis' if args.redis else 'in-memory'} channel layer, {args.workers} core "
        f"process(es), {os.cpu_count()} CPUs; make run's system (run_cortex) with DEBUG=0",
        "profile": profile.__dict__,
    }
    print(result["setup"], flush=True)
    with contextlib.ExitStack() as stack:
        db_env = stack.enter_context(fresh_database())
        extra = {"REDIS_URL": stack.enter_context(redis_server())} if args.redis else {}
        env = server_env(**db_env, **extra, **LIMITS)
        # One `manage.py shell` for every user (the resume workload's too): a process start is
        # seconds of CPU, and the smoke run is part of `make test`.
        create_users(
            *(f"bench{n:02d}@example.com" for n in range(1, USERS + 1)),
            "resume@example.com",
            password=PASSWORD,
            env=env,
        )
        emails = [f"bench{n:02d}@example.com" for n in range(1, USERS + 1)]
        with system(env, args.workers, profile.heartbeat) as sut:
            tokens = asyncio.run(_logins(sut.port, emails))
            print(f"system: {sut.pids()}", flush=True)
            if "input" in wanted:
                with profiled(sut, "input", profile.seconds):
                    result["input"] = asyncio.run(input_load(sut, tokens, profile.clients, profile.seconds))
                print("input:", json.dumps(result["input"]), flush=True)
                result["memory"] = memory_catch_up(sut, result["input"]["accepted"], time.monotonic())
                print("memory:", json.dumps(result["memory"]), flush=True)
            if "fanout" in wanted:
                with profiled(sut, "fanout", profile.fan_seconds):
                    result["fanout"] = asyncio.run(
                        fan_out(sut, tokens, profile.subscribers, profile.rate, profile.fan_seconds)
                    )
                print("fan-out:", json.dumps(result["fanout"]), flush=True)
            if args.smoke:  # one system for everything: the smoke run checks behaviour, not figures
                later(result, sut, wanted, profile, emails, env)
        if not args.smoke:
            with system(env, args.workers, profile.heartbeat) as sut:  # fresh: a clean RSS baseline
                later(result, sut, wanted, profile, emails, env)
    out = args.out or ROOT / "var" / "bench" / f"hotpath-{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def later(
    result: dict[str, Any], sut: System, wanted: set[str], profile: Profile, emails: list[str], env: dict[str, str]
) -> None:
    """The idle and resume workloads (on a freshly started system, except in the smoke run)."""
    if "idle" in wanted:
        tokens = asyncio.run(_logins(sut.port, emails))
        result["idle"] = asyncio.run(idle_streams(sut, tokens, profile.idle, profile.heartbeat))
        print("idle:", json.dumps(result["idle"]), flush=True)
    if "resume" in wanted:
        token = asyncio.run(login(sut.port, "resume@example.com"))
        result["resume"] = asyncio.run(resume(sut, token, profile.resume))
        print("resume:", json.dumps(result["resume"]), flush=True)


async def _logins(port: int, emails: list[str]) -> list[str]:
    return list(await asyncio.gather(*(login(port, email) for email in emails)))


if __name__ == "__main__":
    raise SystemExit(main())
