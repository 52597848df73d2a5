"""Where an input's live copy spends its time between `POST /input` and the streams' sockets: the
summary of a core's stage timestamps.

With `BENCH_STAGE_TRACE=<path>` in a core process's environment (`bench.hotpath`, `bench/harness.sh`),
the core installs `operations/stage_trace.py` at start-up, and every input batch of the writer thread
appends one line to `<path>.<pid>` with monotonic timestamps of its stages (the line format is
described there), and with a shared layer (Redis) every copy one line with its time from `publish`
to its hand-over to the streams in the same process:

- `sub0`, `sub1`: the first and last input of the batch queued for the writer (`InputWriter.submit`);
- `taken`: the writer took the batch; `commit`: it committed (the on-commit hook);
- `cb`: the loop runs the publication (`streaming.services._publish`), `pubend`: it returned
  (every stream's writer was called; with Redis: the batch was queued for the sender);
- `settle`: the loop answers the batch's requests.

This module only reads that file: `.venv/bin/python -m bench.stage_trace <path>.<pid>`
(percentiles per stage, and the stages of the slowest batches).
"""

from __future__ import annotations

import sys

STAGES = [
    ("queued for the writer", "sub0", "taken"),
    ("the batch's transaction", "taken", "commit"),
    ("commit -> loop (handoff)", "commit", "cb"),
    ("publication on the loop", "cb", "pubend"),
    ("queued -> published", "sub0", "pubend"),
]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summary(path: str) -> str:
    batches: list[dict[str, float]] = []
    redis: list[float] = []
    for line in open(path):
        if line.startswith("B "):
            batches.append({k: float(v) for k, v in (item.split("=") for item in line.split()[1:])})
        elif line.startswith("R "):
            redis.append(float(line.split()[1]) * 1000)
    lines = [f"{len(batches)} batches, {sum(b['n'] for b in batches) / max(1, len(batches)):.2f} inputs each (ms)"]
    lines.append("| stage | p50 | p90 | p99 | max |")
    lines.append("|---|---|---|---|---|")
    for name, start, end in STAGES:
        values = [(b[end] - b[start]) * 1000 for b in batches if start in b and end in b]
        if values:
            row = " | ".join(f"{_pct(values, q):.1f}" for q in (0.5, 0.9, 0.99)) + f" | {max(values):.1f}"
            lines.append(f"| {name} | {row} |")
    if redis:
        row = " | ".join(f"{_pct(redis, q):.1f}" for q in (0.5, 0.9, 0.99)) + f" | {max(redis):.1f}"
        lines.append(f"| Redis: publish -> handed to the streams (same process, {len(redis)} copies) | {row} |")
    worst = sorted(batches, key=lambda b: b["pubend"] - b["sub0"])[-5:]
    lines.append(
        "slowest batches: "
        + "; ".join(
            ", ".join(f"{(b[e] - b[s]) * 1000:.0f}" for _, s, e in STAGES[:4]) + f" (n={int(b['n'])})" for b in worst
        )
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sys.argv[1]))
