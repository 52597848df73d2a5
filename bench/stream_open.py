"""What opening an SSE stream costs the server: CPU per open and where it goes (cProfile).

    .venv/bin/python -m bench.stream_open [N]      (default 1000 streams)

Starts the core's ASGI application under uvicorn in this process (as `bench.stream_memory`), opens
N streams 100 at a time and prints the process's CPU per open (the client's side included: it is
the same for every tree, so compare before and after in one sitting) and the top of the profile.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import sys
import time

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench import hotpath
from bench.streaming import RawSSE
from tests.servers import create_users, free_port, fresh_database, server_env


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with fresh_database() as database:
        env = server_env(**database, **hotpath.LIMITS)
        emails = [f"bench{n:02d}@example.com" for n in range(1, 11)]
        create_users(*emails, password=hotpath.PASSWORD, env=env)
        os.environ.update(env)
        os.environ["DJANGO_SETTINGS_MODULE"] = "cortex_site.settings"
        import django

        django.setup()
        import uvicorn
        import uvloop

        from cortex_site.asgi import application

        uvloop.run(_measure(application, uvicorn, count, emails))
    return 0


async def _measure(application: object, uvicorn: object, count: int, emails: list[str]) -> None:
    port = free_port()
    config = uvicorn.Config(  # type: ignore[attr-defined]
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
    server = uvicorn.Server(config)  # type: ignore[attr-defined]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    tokens = [await hotpath.login(port, email) for email in emails]
    warm = [RawSSE(port, tokens[n % len(tokens)]) for n in range(50)]  # first-use caches, imports
    for stream in warm:
        await stream.open()
    for stream in warm:
        stream.close()
    await asyncio.sleep(1)
    profile = cProfile.Profile()
    cpu, wall = time.process_time(), time.monotonic()
    profile.enable()
    streams = [RawSSE(port, tokens[n % len(tokens)]) for n in range(count)]
    for offset in range(0, count, 100):
        await asyncio.gather(*(stream.open() for stream in streams[offset : offset + 100]))
    profile.disable()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    print(f"{count} streams opened: {cpu * 1000 / count:.2f} ms CPU each (client included), {wall:.1f} s wall")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    for stream in streams:
        stream.close()
    server.should_exit = True
    await task


if __name__ == "__main__":
    raise SystemExit(main())
