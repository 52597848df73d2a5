"""`make bench`: every benchmark in turn, against real processes on 127.0.0.1 (bounded loads)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    "bench.hotpath",
    "bench.streaming",
    "bench.mcp",
    "bench.experts",
    "bench.memory",
    "bench.account_export",
    "bench.turns",
    "bench.startup",
]


def main() -> int:
    wanted = sys.argv[1:] or BENCHMARKS
    failed = 0
    for name in wanted:
        print(f"\n=== {name} ===", flush=True)
        module = importlib.import_module(name if name.startswith("bench.") else f"bench.{name}")
        sys.argv = [name]  # each benchmark parses its own options; here they run on their defaults
        failed += 1 if module.main() else 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
