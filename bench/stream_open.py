"""What opening an SSE stream costs the server: CPU per open and where it goes (cProfile).

    .venv/bin/python -m bench.stream_open [N]      (default 1000 streams)

Starts the core's ASGI application under uvicorn in this process (as `bench.stream_memory`), opens
N streams 100 at a time and prints the process's CPU per open (the client's side included: it is
the same for every tree, so compare before and after in one sitting) and the top of the profile.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import time

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench.stream_memory import serve_in_process
from bench.streaming import RawSSE


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    serve_in_process(lambda port, tokens: _measure(port, tokens, count))
    return 0


async def _measure(port: int, tokens: list[str], count: int) -> None:
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


if __name__ == "__main__":
    raise SystemExit(main())
