"""Who waits for SQLite's write lock, how long, and who held it meanwhile.

With `BENCH_LOCK_TRACE=<path>` in the environment of every process (`bench.hotpath`, `bench.turns`
and `bench/harness.sh` pass their environment on), the SQLite backend (`common/db/sqlite/base.py`)
appends one line per write transaction (and per write statement outside one) to `<path>.<pid>`:
when it asked, its wait for the write turn, `BEGIN IMMEDIATE`'s own wait (SQLite's busy handler),
the body until its commit or rollback, its thread and the project's frame that opened it.

    .venv/bin/python -m bench.lock_trace <path>            # every <path>.<pid>
    .venv/bin/python -m bench.lock_trace <path>.<pid> ...  # these processes (one system's)

prints the waits' distribution (turn + BEGIN), per process and opening site, and for the slowest
waits the transactions that held the lock meanwhile.
"""

from __future__ import annotations

import glob
import sys
from collections import defaultdict
from typing import Any


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def load(paths: list[str]) -> list[dict[str, Any]]:
    """`paths`: a prefix (every `<prefix>.<pid>`) or the files themselves."""
    files = [p for p in paths if p.rsplit(".", 1)[-1].isdigit()] or [
        name for name in sorted(glob.glob(f"{paths[0]}.*")) if name.rsplit(".", 1)[-1].isdigit()
    ]
    rows: list[dict[str, Any]] = []
    for name in files:
        role = name.rsplit(".", 1)[-1]
        with open(name) as handle:
            for line in handle:
                if line.startswith("#"):
                    argv = line.split("argv=", 1)[-1].strip()
                    words = argv.split()
                    role = words[1] if len(words) > 1 and words[0] == "manage.py" else "core" if words else role
                    continue
                kind, t0, turn, begin, body, outcome, thread, site = line.split()
                start = float(t0)
                rows.append(
                    {
                        "kind": kind,
                        "t0": start,
                        "turn": float(turn),
                        "begin": float(begin),
                        "body": float(body),
                        "wait": float(turn) + float(begin),
                        "outcome": outcome,
                        "thread": thread,
                        "site": site,
                        "role": role,
                        "held_from": start + (float(turn) + float(begin)) / 1000,
                        "held_to": start + (float(turn) + float(begin) + float(body)) / 1000,
                    }
                )
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    out = []
    waits = [r["wait"] for r in rows]
    out.append(
        f"{len(rows)} write transactions/statements; wait (turn + BEGIN) ms p50 {_pct(waits, 50):.2f} "
        f"p90 {_pct(waits, 90):.2f} p99 {_pct(waits, 99):.2f} max {max(waits, default=0):.2f}; "
        f"BEGIN's own wait p99 {_pct([r['begin'] for r in rows], 99):.2f}; "
        f"waited > 5 ms: {sum(w > 5 for w in waits)}, > 20 ms: {sum(w > 20 for w in waits)}"
    )
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["role"], row["kind"], row["site"])].append(row)
    out.append("")
    out.append("| process | kind | site | n | wait p50 / p99 / max ms | BEGIN wait p99 | body p50 / p99 / max ms |")
    out.append("|---|---|---|---|---|---|---|")
    for (role, kind, site), group in sorted(groups.items(), key=lambda item: -len(item[1])):
        w = [r["wait"] for r in group]
        b = [r["body"] for r in group]
        out.append(
            f"| {role} | {kind} | {site} | {len(group)} | {_pct(w, 50):.2f} / {_pct(w, 99):.2f} / {max(w):.2f} | "
            f"{_pct([r['begin'] for r in group], 99):.2f} | {_pct(b, 50):.2f} / {_pct(b, 99):.2f} / {max(b):.2f} |"
        )
    out.append("")
    out.append("Slowest waits, and who held the lock meanwhile (holder: process site, hold ms, its part of the wait):")
    by_start = sorted(rows, key=lambda r: r["held_from"])
    idle_total = 0.0
    for row in sorted(rows, key=lambda r: -r["wait"])[:12]:
        start, end = row["t0"], row["held_from"]
        holders = [h for h in by_start if h is not row and h["held_from"] < end and h["held_to"] > start]
        covered = sum(min(end, h["held_to"]) - max(start, h["held_from"]) for h in holders) * 1000
        idle = row["wait"] - covered
        idle_total += max(0.0, idle)
        text = ", ".join(
            f"{h['role']} {h['site']} {h['body']:.1f} ({(min(end, h['held_to']) - max(start, h['held_from'])) * 1000:.1f})"
            for h in holders[:6]
        )
        out.append(
            f"- {row['role']} {row['kind']} {row['site']} [{row['thread']}]: waited {row['wait']:.1f} ms "
            f"(turn {row['turn']:.1f}, BEGIN {row['begin']:.1f}); nobody held it for {max(0.0, idle):.1f} ms "
            f"of it; holders: {text}"
        )
    # For every wait > 5 ms: the share of it during which no traced transaction held the lock.
    slow = [r for r in rows if r["wait"] > 5]
    free = 0.0
    total = 0.0
    for row in slow:
        start, end = row["t0"], row["held_from"]
        spans = sorted(
            (max(start, h["held_from"]), min(end, h["held_to"]))
            for h in by_start
            if h is not row and h["held_from"] < end and h["held_to"] > start
        )
        covered, cursor = 0.0, start
        for a, b in spans:
            if b > cursor:
                covered += b - max(a, cursor)
                cursor = b
        free += max(0.0, (end - start) - covered)
        total += end - start
    if total:
        out.append("")
        out.append(
            f"Waits over 5 ms: {len(slow)}, {total * 1000:.0f} ms in all, of which {free * 1000:.0f} ms "
            f"({100 * free / total:.0f}%) with no traced holder (the lock free, the waiter asleep)."
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__)
        return 2
    print(summary(load(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
