"""Live output against real core processes on 127.0.0.1 (bounded loads).

`.venv/bin/python -m bench.streaming` (SQLite; add `--server uvicorn` for uvicorn), or
`scripts/with_postgres.sh .venv/bin/python -m bench.streaming`.

1. Fan-out: SUBSCRIBERS users, one SSE stream each, all participants of one conversation; inputs
   posted to it at RATE/s for SECONDS. Reports events/s delivered (over all streams) and
   publish-to-receive latency (client clock before POST -> event parsed by a subscriber).
2. Idle cost: IDLE open SSE streams on a fresh server; RSS growth per stream from
   /proc/<pid>/status VmRSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from tests.servers import core_server, fresh_database, manage, running, server_env

PASSWORD = "bench-password-0123456789"
ENV = {
    "LOG_LEVEL": "WARNING",
    "MEMORY_DRAIN_ON_COMMIT": "0",
    "INPUT_RATE": "1000000/min",
    "TICKET_RATE": "1000000/min",
    "LOGIN_RATE": "1000000/min",
    "STREAMS_PER_USER": "1000000",
}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def setup_users(env: dict[str, str], count: int) -> str:
    """Users sub0..subN-1, one workspace of sub0 and a conversation with all of them."""
    return (
        manage(
            "shell",
            "-c",
            "from accounts.models import User\n"
            "from workspaces.services import workspace_create, conversation_create\n"
            f"users = [User.objects.create_user(email=f'sub{{n}}@example.com', password={PASSWORD!r}) for n in range({count})]\n"
            "w = workspace_create(owner=users[0], name='bench')\n"
            "c = conversation_create(workspace=w, creator=users[0], topic='bench', participant_ids=[u.id for u in users[1:]])\n"
            "print(c.id)\n",
            env=env,
        )
        .strip()
        .splitlines()[-1]
    )


async def http_json(port: int, method: str, path: str, body: dict | None, token: str | None = None) -> dict:
    import httpx2

    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await client.request(method, path, json=body, headers=headers)
        response.raise_for_status()
        return response.json()


class RawSSE:
    """A minimal SSE reader on a raw socket (chunked HTTP/1.1): cheap enough for many streams."""

    def __init__(self, port: int, token: str, last_event_id: int | None = None) -> None:
        self.port, self.token, self.last_event_id = port, token, last_event_id
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        resume = f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id is not None else ""
        self.writer.write(
            f"GET /output/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n{resume}\r\n".encode()
        )
        await self.writer.drain()
        status = await self.reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream refused: {status!r}")
        while (await self.reader.readline()) not in (b"\r\n", b""):
            pass
        await self.chunk()  # the `retry:` hint: the stream is subscribed

    async def chunk(self) -> bytes:
        size = int((await self.reader.readline()).strip(), 16)
        data = await self.reader.readexactly(size + 2)
        if size == 0:
            raise EOFError
        return data[:-2]

    async def frames(self):
        """Raw SSE frames (`id:`/`data:` lines, or a `: ping`), however the chunks split them."""
        buffer = b""
        while True:
            buffer += await self.chunk()
            *complete, buffer = buffer.split(b"\n\n")
            for frame in complete:
                yield frame

    async def events(self):
        while True:
            for frame in (await self.chunk()).split(b"\n\n"):
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: "):
                        yield json.loads(line[6:])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def open_loop(post, count: int, rate: float) -> None:
    """Start `post(n)` for n in range(count) at `rate` per second, whatever their latency; wait for all."""
    start = time.monotonic()
    tasks = []
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(n)))
    await asyncio.gather(*tasks)


async def fanout(port: int, tokens: list[str], conversation_id: str, rate: int, seconds: int) -> dict:
    streams = [RawSSE(port, token) for token in tokens]
    await asyncio.gather(*(stream.open() for stream in streams))
    total_inputs = rate * seconds
    latencies: list[float] = []
    received = 0

    async def consume(stream: RawSSE) -> None:
        nonlocal received
        seen = 0
        async for event in stream.events():
            sent = float(event["data"]["content"].split()[2])
            latencies.append(time.time() - sent)
            received += 1
            seen += 1
            if seen == total_inputs:
                return

    consumers = [asyncio.create_task(consume(stream)) for stream in streams]
    import httpx2

    failures = 0
    limit = asyncio.Semaphore(32)
    async with httpx2.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=30, limits=httpx2.Limits(max_connections=32)
    ) as client:
        headers = {"Authorization": f"Bearer {tokens[0]}"}

        async def post(n: int) -> None:
            nonlocal failures
            async with limit:
                body = {"content": f"bench {n} {time.time():.6f}", "conversation_id": conversation_id}
                response = await client.post("/input", json=body, headers=headers)
                if response.status_code != 200:
                    failures += 1
                    if failures == 1:
                        print("first failed post:", response.status_code, response.text[:300], flush=True)

        start = time.monotonic()
        await open_loop(post, total_inputs, rate)
        posting_seconds = time.monotonic() - start
        try:
            await asyncio.wait_for(asyncio.gather(*consumers), timeout=60)
        except TimeoutError:
            pass
        elapsed = time.monotonic() - start
    for task in consumers:
        task.cancel()
    for stream in streams:
        stream.close()
    return {
        "inputs": total_inputs,
        "post_failures": failures,
        "posting_seconds": round(posting_seconds, 2),
        "expected_deliveries": total_inputs * len(streams),
        "delivered": received,
        "events_per_second": round(received / elapsed, 1),
        "latency_ms_p50": round(1000 * percentile(latencies, 0.50), 1) if latencies else None,
        "latency_ms_p99": round(1000 * percentile(latencies, 0.99), 1) if latencies else None,
        "latency_ms_mean": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
    }


async def idle_rss(port: int, pid: int, token: str, count: int) -> dict:
    warm = [RawSSE(port, token) for _ in range(20)]
    for stream in warm:
        await stream.open()
    await asyncio.sleep(1)
    before = rss_kib(pid)
    streams = [RawSSE(port, token) for _ in range(count)]
    for offset in range(0, count, 100):
        await asyncio.gather(*(stream.open() for stream in streams[offset : offset + 100]))
    await asyncio.sleep(2)
    after = rss_kib(pid)
    for stream in warm + streams:
        stream.close()
    return {
        "streams": count,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "kib_per_stream": round((after - before) / count, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.streaming", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--rate", type=int, default=50, help="inputs per second")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--idle", type=int, default=1000, help="idle streams for the RSS measurement")
    args = parser.parse_args(argv if argv is not None else [])
    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    print(
        f"server={args.server} database={database} subscribers={args.subscribers} rate={args.rate}/s "
        f"for {args.seconds}s idle={args.idle}",
        flush=True,
    )
    with fresh_database() as db_env:
        env = server_env(**db_env, **ENV)
        conversation_id = setup_users(env, args.subscribers)
        with running(core_server(env=env, server=args.server)) as server:
            tokens = asyncio.run(_tokens(server.port, args.subscribers))
            cpu_before, client_before = cpu_seconds(server.process.pid), time.process_time()
            result = asyncio.run(fanout(server.port, tokens, conversation_id, args.rate, args.seconds))
            result["server_cpu_seconds"] = round(cpu_seconds(server.process.pid) - cpu_before, 1)
            result["client_cpu_seconds"] = round(time.process_time() - client_before, 1)
            print("fan-out:", json.dumps(result), flush=True)
        with running(core_server(env=env, server=args.server)) as server:
            token = asyncio.run(_tokens(server.port, 1))[0]
            result = asyncio.run(idle_rss(server.port, server.process.pid, token, args.idle))
            print("idle streams:", json.dumps(result), flush=True)
    return 0


async def _tokens(port: int, count: int) -> list[str]:
    return [
        (await http_json(port, "POST", "/auth/login", {"email": f"sub{n}@example.com", "password": PASSWORD}))[
            "access_token"
        ]
        for n in range(count)
    ]


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
