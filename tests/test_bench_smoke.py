"""`make bench` must not rot: its hot-path benchmark runs seconds-long on every `make test`.

This checks that every workload runs against the real system and that what it reports is
correct (nothing lost, refused or out of order); the figures themselves are the benchmark's to
report, never a test's to assert.
"""

from __future__ import annotations

import json
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
