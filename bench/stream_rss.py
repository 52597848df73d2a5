"""What an idle SSE stream adds to the server's resident memory, independent of the machine's load.

    .venv/bin/python -m bench.stream_rss [N]      (default 2000 streams)

The core's ASGI application under uvicorn in this process (`bench.stream_memory.serve_in_process`,
as `run_cortex`), N idle streams opened by a client in another process, 100 at a time (so the
server never has more than 100 opens in flight, whatever the load: `bench/harness.sh`'s ramp at a
load average of 10 piles up thousands, whose transient memory then stays in the heap). Prints,
per stream: the process's RSS growth, the pymalloc blocks, glibc malloc's growth (`mallinfo2`) and
the objects by type (a census of the garbage collector's objects; coroutines are the suspended frames).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import sys

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench.stream_memory import serve_in_process


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2

CLIENT = """
import asyncio, sys
from bench.streaming import RawSSE
async def main():
    port, count, tokens = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
    streams = [RawSSE(port, tokens[n % len(tokens)]) for n in range(count)]
    for offset in range(0, count, 100):
        await asyncio.gather(*(stream.open() for stream in streams[offset : offset + 100]))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main())
"""


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _state() -> tuple[int, int, int, collections.Counter[str]]:
    gc.collect()
    info = _libc.mallinfo2()
    objects = collections.Counter(type(item).__qualname__ for item in gc.get_objects())
    return _rss_kb(), sys.getallocatedblocks(), info.uordblks, objects


async def _client(port: int, tokens: list[str], count: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, str(port), str(count), ",".join(tokens),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line.startswith(b"ready"):
        raise RuntimeError("the client could not open its streams")
    return process


async def _stop(process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    process.stdin.write(b"\n")
    await process.stdin.drain()
    await process.wait()


async def _measure(port: int, tokens: list[str], count: int) -> None:
    rss, blocks, malloc, objects = _state()
    client = await _client(port, tokens, count)
    await asyncio.sleep(2)
    rss_after, blocks_after, malloc_after, objects_after = _state()
    print(
        f"{count} idle streams: RSS {(rss_after - rss) * 1024 / count:.0f} B per stream, "
        f"pymalloc blocks {(blocks_after - blocks) / count:.1f}, malloc {(malloc_after - malloc) / count:.0f} B"
    )
    grown = {name: (objects_after[name] - objects[name]) / count for name in objects_after}
    print(", ".join(f"{name} {per:.2f}" for name, per in sorted(grown.items(), key=lambda i: -i[1]) if per >= 0.5))
    await _stop(client)


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    serve_in_process(lambda port, tokens: _measure(port, tokens, count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
