"""What an idle SSE stream allocates, by source (tracemalloc), with uvicorn in this process.

    .venv/bin/python -m bench.stream_memory [N]      (default 1000 streams)

Starts the core's ASGI application under uvicorn (httptools, uvloop, no proxy headers: as
`run_cortex`) on a fresh database, opens N idle streams from this process, and prints the bytes
per stream that stay allocated on the server's side, grouped by file (uvicorn's own part, which the
shared floor pays too, is marked UVICORN). Unlike RSS this does not move with the load or the
heap's warmth: it is the figure to compare before and after a change.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tracemalloc
from collections.abc import Awaitable, Callable

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench import hotpath
from bench.streaming import RawSSE
from tests.servers import create_users, free_port, fresh_database, server_env


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    serve_in_process(lambda port, tokens: _measure(port, tokens, count))
    return 0


def serve_in_process(measure: Callable[[int, list[str]], Awaitable[None]]) -> None:
    """The core's ASGI application under uvicorn in this process (as `run_cortex`), on a fresh
    database with ten users; `measure(port, tokens)` runs once 50 streams warmed the first-use
    caches and imports, then the server stops. Shared with `bench.stream_open`."""
    with fresh_database() as database:
        env = server_env(**database, **hotpath.LIMITS)
        emails = [f"bench{n:02d}@example.com" for n in range(1, 11)]
        create_users(*emails, password=hotpath.PASSWORD, env=env)
        os.environ.update(env)
        os.environ["DJANGO_SETTINGS_MODULE"] = "cortex_site.settings"
        import django

        django.setup()
        import uvloop

        uvloop.run(_serve(measure, emails))


async def _serve(measure: Callable[[int, list[str]], Awaitable[None]], emails: list[str]) -> None:
    import uvicorn

    from cortex_site.asgi import application

    port = free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        proxy_headers=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    tokens = [await hotpath.login(port, email) for email in emails]
    warm = [RawSSE(port, tokens[n % len(tokens)]) for n in range(50)]  # first-use caches, imports
    for stream in warm:
        await stream.open()
    await asyncio.sleep(1)
    for stream in warm:
        stream.close()
    await asyncio.sleep(1)
    try:
        await measure(port, tokens)
    finally:
        server.should_exit = True
        await task


async def _measure(port: int, tokens: list[str], count: int) -> None:
    tracemalloc.start(12)
    before = tracemalloc.take_snapshot()
    streams = [RawSSE(port, tokens[n % len(tokens)]) for n in range(count)]
    for offset in range(0, count, 100):
        await asyncio.gather(*(stream.open() for stream in streams[offset : offset + 100]))
    await asyncio.sleep(2)
    after = tracemalloc.take_snapshot()
    here, first = __file__, _measure.__code__.co_firstlineno
    by_file: dict[str, int] = {}
    total = 0
    for stat in after.compare_to(before, "traceback"):
        frames = [frame.filename for frame in stat.traceback]
        # The client's side (bench.streaming, and this coroutine's own lines) is not the server's.
        if any(
            frame.filename.endswith("bench/streaming.py") or (frame.filename == here and frame.lineno >= first)
            for frame in stat.traceback
        ):
            continue
        total += stat.size_diff
        key = frames[-1] if frames else "?"
        owner = next((name for name in reversed(frames) if "uvicorn/" in name or "uvloop" in name), None)
        key = "UVICORN " + owner.split("site-packages/")[-1] if owner else key.split("site-packages/")[-1]
        by_file[key] = by_file.get(key, 0) + stat.size_diff
    print(f"{total / count:.0f} bytes allocated per idle stream on the server's side ({count} streams)")
    for key, size in sorted(by_file.items(), key=lambda item: -item[1])[:25]:
        print(f"{size / count:8.0f}  {key}")
    for stream in streams:
        stream.close()


if __name__ == "__main__":
    raise SystemExit(main())
