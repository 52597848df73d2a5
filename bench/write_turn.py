"""SQLite's write lock handed from one process to the next: the write turn against SQLite's busy handler.

N writer processes (the project's backend, `common.db.sqlite`, on one temporary SQLite file in WAL
mode) each run M write transactions that hold the lock `--hold` ms (an INSERT, then a sleep: the
lock held as a transaction's body holds it). Each transaction records when it asked, when its
`BEGIN IMMEDIATE` returned and when it committed (`time.perf_counter`, one clock for every process
on Linux). The **hand-over** of a transaction that had to wait is the time from the last commit
before it got the lock to the moment it got it: the lock free and a writer waiting, asleep.

    .venv/bin/python -m bench.write_turn                     # 3 writers x 200 transactions, 2 ms held
    .venv/bin/python -m bench.write_turn --writers 4 --hold 5

Runs each setting (`write_turn` off: Django's backend and SQLite's busy handler; on: the turn) and
prints the hand-over's p50/p99/max, the wait's, and the writers' CPU per transaction.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _writer(path: str, turn: bool, count: int, hold: float, start: float, out: Any) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "common.db.sqlite",
                "NAME": path,
                "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20, "write_turn": turn},
            }
        }
    )
    django.setup()
    from django.db import connection, transaction

    connection.ensure_connection()
    while time.perf_counter() < start:
        time.sleep(0.001)
    rows = []
    cpu0 = time.process_time()
    for _ in range(count):
        asked = time.perf_counter()
        with transaction.atomic():
            begun = time.perf_counter()
            connection.cursor().execute("INSERT INTO item (at) VALUES (%s)", [begun])
            time.sleep(hold)
        rows.append((asked, begun, time.perf_counter()))
        time.sleep(hold / 2)  # a little work between transactions
    out.put({"rows": rows, "cpu": time.process_time() - cpu0})


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else 0.0


def run(turn: bool, writers: int, count: int, hold: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "turn.sqlite3")
        import sqlite3

        with sqlite3.connect(path) as plain:
            plain.execute("PRAGMA journal_mode=WAL")
            plain.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, at REAL)")
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        start = time.perf_counter() + 2.0
        processes = [
            context.Process(target=_writer, args=(path, turn, count, hold, start, out)) for _ in range(writers)
        ]
        for process in processes:
            process.start()
        results = [out.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(30)
    transactions = sorted((row for result in results for row in result["rows"]), key=lambda row: row[1])
    commits = sorted(row[2] for row in transactions)
    waits, handovers = [], []
    import bisect

    for asked, begun, _ in transactions:
        waits.append((begun - asked) * 1000)
        if begun - asked > 0.0005:  # it waited: since when was the lock free?
            index = bisect.bisect_left(commits, begun) - 1
            if index >= 0 and commits[index] > asked:
                handovers.append((begun - commits[index]) * 1000)
    return {
        "write_turn": turn,
        "transactions": len(transactions),
        "waited": len(handovers),
        "handover_ms": {p: round(_pct(handovers, q), 2) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))}
        | {"max": round(max(handovers, default=0.0), 2)},
        "wait_ms": {p: round(_pct(waits, q), 2) for p, q in (("p50", 50), ("p99", 99))},
        "cpu_ms_per_transaction": round(1000 * sum(r["cpu"] for r in results) / max(1, len(transactions)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.write_turn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=200)
    parser.add_argument("--hold", type=float, default=2.0, help="ms each transaction holds the lock")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.pop("BENCH_LOCK_TRACE", None)
    for turn in (False, True):
        result = run(turn, args.writers, args.transactions, args.hold / 1000)
        result["loadavg"] = open("/proc/loadavg").read().split()[:3]
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
