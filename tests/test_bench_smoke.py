"""`make bench` must not rot: its hot-path benchmark runs seconds-long on every `make test`.

This checks that every workload runs against the real system and that what it reports is
correct (nothing lost, refused or out of order); the figures themselves are the benchmark's to
report, never a test's to assert.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.servers import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]


def test_hotpath_benchmark_smoke_run_loses_nothing(tmp_path):
    out = tmp_path / "hotpath.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.hotpath", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        # The stage trace (operations/stage_trace.py, read by bench/stage_trace.py) rides along: no run of its own.
        env={**os.environ, "BENCH_STAGE_TRACE": str(tmp_path / "stages")},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["input"]["requests"] > 0 and result["input"]["non_2xx"] == 0
    assert result["memory"]["in_memory"] == result["memory"]["expected"] == result["input"]["accepted"]
    fanout = result["fanout"]
    assert fanout["post_failures"] == 0 and fanout["expected"] > 0
    assert fanout["lost"] == fanout["duplicates"] == fanout["cross_user"] == 0
    assert result["idle"]["failed"] == 0 and result["idle"]["heartbeats_seen"] > 0
    assert result["resume"]["delivered"] == result["resume"]["missed"] and result["resume"]["in_order_without_gaps"]
    assert "| POST /input |" in out.with_suffix(".md").read_text()
    _the_stage_trace_has_every_stage(tmp_path)


def _the_stage_trace_has_every_stage(tmp_path):
    """`BENCH_STAGE_TRACE`: the core wrote a line per writer batch with every stage, and the summary
    reads it."""
    files = [path for path in tmp_path.glob("stages.*") if path.stat().st_size]
    assert files  # the core processes (the trace is installed only where the ASGI app is)
    batches = [line for path in files for line in path.read_text().splitlines() if line.startswith("B ")]
    assert batches and all(
        all(f" {stage}=" in line for stage in ("sub0", "taken", "commit", "cb", "pubend", "settle")) for line in batches
    )
    biggest = max(files, key=lambda path: path.stat().st_size)
    summary = subprocess.run(
        [sys.executable, "-m", "bench.stage_trace", str(biggest)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert summary.returncode == 0 and "| queued -> published |" in summary.stdout, summary.stderr
