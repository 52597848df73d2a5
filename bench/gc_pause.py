"""A full collection in a process that imported the ASGI app, with its start-up objects frozen (as
`cortex_site/asgi.py` does) and not: `.venv/bin/python -m bench.gc_pause`."""

from __future__ import annotations

import gc
import importlib
import os
import tempfile
import time

SETTINGS = {
    "DEBUG": "0",
    "SECRET_KEY": "s" * 50,
    "JWT_SIGNING_KEY": "j" * 50,
    "CORTEX_SERVICE_TOKEN": "t" * 40,
    "ALLOWED_HOSTS": "127.0.0.1",
    "LOG_LEVEL": "WARNING",
}


def full_collection_ms(rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        gc.collect()
        times.append(1000 * (time.perf_counter() - started))
    return sorted(times)[rounds // 2]


def main() -> None:
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("SQLITE_PATH", os.path.join(tempfile.mkdtemp(), "gc.sqlite3"))
    importlib.import_module("cortex_site.asgi")  # ends with gc.freeze()
    frozen = gc.get_freeze_count()
    with_freeze = full_collection_ms()
    gc.unfreeze()
    without = full_collection_ms()
    print(
        f"objects frozen at start-up: {frozen}; full collection median: {with_freeze:.1f} ms frozen,"
        f" {without:.1f} ms not frozen"
    )


if __name__ == "__main__":
    main()
