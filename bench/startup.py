"""What each kind of process the system (and the suite) starts costs before it is ready: CPU
(user + system) from exec to ready (its port listening, or its ready line logged), its RSS then, and
for a core the CPU of its first request (which loads the URLconf). The suite starts about two
hundred of these per pass, so their start-up is most of its CPU.

    .venv/bin/python -m bench.startup                      # every kind, 3 starts each, this tree
    .venv/bin/python -m bench.startup --root /work/main    # the same processes of another checkout
    .venv/bin/python -m bench.startup --kinds core,turn_worker --repeat 5

`--root` starts the processes from another checkout (its `manage.py` and modules, this tree's
interpreter and test keys), on the same fresh database: an A/B of start-up in one sitting. Prints
one JSON line per start and a summary table (median per kind). Record `cat /proc/loadavg` beside.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench.streaming import cpu_seconds
from tests.servers import ROOT, free_port, fresh_database, server_env, wait_for_port


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _manage(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


def _kinds(port: Callable[[], int]) -> dict[str, tuple[list[str], str | None, dict[str, str]]]:
    """name -> (argv, ready line or None for a port, extra environment); `{port}` in argv is the port."""
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log"]
    return {
        # As tests/servers.py::core_server starts it (the suite's cores drain no memory on commit).
        "core": ([*uvicorn, "--no-proxy-headers", "cortex_site.asgi:application"], None, {}),
        # As production's default (run_cortex): the core delivers to memory after each commit.
        "core_drain": (
            [*uvicorn, "--no-proxy-headers", "cortex_site.asgi:application"],
            None,
            {"MEMORY_DRAIN_ON_COMMIT": "1"},
        ),
        "memory_service": (_manage("run_memory_service", "--skip-checks", "--port", "{port}"), None, {}),
        "cognition_service": (_manage("run_cognition_service", "--skip-checks", "--port", "{port}"), None, {}),
        "outbox_worker": (_manage("memory_outbox_worker", "--skip-checks"), "memory outbox worker: running", {}),
        "turn_worker": (_manage("turn_worker", "--skip-checks"), "turn worker: running", {}),
        # With a model configured (most of the suite's turn workers: a fake model), as production's.
        "turn_worker_llm": (
            _manage("turn_worker", "--skip-checks"),
            "turn worker: running",
            {"CORTEX_LLM_BASE_URL": f"http://127.0.0.1:{port()}/v1", "CORTEX_LLM_MODEL": "bench-model"},
        ),
        "webhook_worker": (_manage("webhook_worker", "--skip-checks"), "webhook worker: running", {}),
        "notes_expert": (
            _manage(
                "run_notes_expert",
                "--skip-checks",
                "--port",
                "{port}",
                "--jwks-url",
                f"http://127.0.0.1:{port()}/.well-known/jwks.json",
            ),
            None,
            {},
        ),
        "fake_llm": ([*uvicorn, "tests.fake_llm:app"], None, {"FAKE_LLM_LOG": os.devnull}),
    }


# Short commands, run to completion: CPU of the whole run (RUSAGE_CHILDREN).
SHORT = {
    "manage_shell": _manage("shell", "-c", "pass"),
    "manage_migrate_check": _manage("migrate", "--check", "--skip-checks"),
}


def start_once(root: Path, kind: str, env: dict[str, str]) -> dict[str, object]:
    if kind in SHORT:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(SHORT[kind], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{kind}: {done.stdout}\n{done.stderr}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"kind": kind, "cpu_s": round(cpu, 3), "wall_s": round(time.monotonic() - started, 3)}
    argv, ready_line, extra = _kinds(free_port)[kind]
    port = free_port()
    argv = [part.replace("{port}", str(port)) for part in argv]
    with tempfile.NamedTemporaryFile(prefix="bench-startup-", suffix=".log") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            argv, cwd=root, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            if ready_line is None:
                wait_for_port(port, timeout=120, process=process)
            else:
                deadline = time.monotonic() + 120
                while ready_line not in Path(log.name).read_text(errors="replace"):
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{kind} did not start:\n{Path(log.name).read_text(errors='replace')}")
                    time.sleep(0.02)
            wall = time.monotonic() - started
            cpu, rss = cpu_seconds(process.pid), _rss_kb(process.pid)
            first: float | None = None
            if kind.startswith("core"):  # its first request loads the URLconf (every view): CPU of that too
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60) as response:
                    response.read()
                first = cpu_seconds(process.pid) - cpu
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    result = {"kind": kind, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "rss_mb": round(rss / 1024, 1)}
    if first is not None:
        result["first_request_cpu_s"] = round(first, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose processes start (default: this)")
    parser.add_argument("--kinds", default="", help="comma-separated kinds (default: all)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    every = [*_kinds(lambda: 0), *SHORT]
    kinds = [kind for kind in args.kinds.split(",") if kind] or every
    unknown = set(kinds) - set(every)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(every)}")
    results: dict[str, list[dict[str, object]]] = {kind: [] for kind in kinds}
    with fresh_database() as database:
        memory, cognition = free_port(), free_port()  # nothing listens there: no process calls them to start
        env = server_env(
            **database,
            MEMORY_URL=f"http://127.0.0.1:{memory}/mcp",
            COGNITION_URL=f"http://127.0.0.1:{cognition}/mcp",
            LOG_LEVEL="INFO",
            PYTHONDONTWRITEBYTECODE="",
        )
        if args.root.resolve() != ROOT:  # another checkout's bytecode goes to a cache of its own, not into it
            env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / f"bench-startup-pycache-{args.root.name}")
        for kind in kinds:  # a first start of each, not counted: it writes the bytecode caches
            start_once(args.root, kind, env)
        for _ in range(args.repeat):
            for kind in kinds:  # interleaved: a load change spreads over every kind
                result = start_once(args.root, kind, env)
                print(json.dumps(result), flush=True)
                results[kind].append(result)
    print(f"\nroot {args.root}, load {Path('/proc/loadavg').read_text().split()[:3]}, median of {args.repeat}")
    print(f"{'kind':22s} {'CPU s':>7s} {'wall s':>7s} {'RSS MB':>7s} {'1st req CPU s':>14s}")
    for kind, runs in results.items():
        cpu = statistics.median(float(run["cpu_s"]) for run in runs)  # type: ignore[arg-type]
        wall = statistics.median(float(run["wall_s"]) for run in runs)  # type: ignore[arg-type]
        rss = [float(run["rss_mb"]) for run in runs if "rss_mb" in run]  # type: ignore[arg-type]
        first = [float(run["first_request_cpu_s"]) for run in runs if "first_request_cpu_s" in run]  # type: ignore[arg-type]
        print(
            f"{kind:22s} {cpu:7.2f} {wall:7.2f} {statistics.median(rss) if rss else float('nan'):7.1f}"
            f" {statistics.median(first) if first else float('nan'):14.2f}"
        )


if __name__ == "__main__":
    main()
