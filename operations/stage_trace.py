"""Stage timestamps of the input path and the fan-out, for the benchmarks (`BENCH_STAGE_TRACE`).

With `BENCH_STAGE_TRACE=<path>` in a core process's environment, `cortex_site/asgi.py` calls
`install(path)` once at start-up (nothing else does, and without the setting nothing here is
imported): every input batch of the writer thread then appends one line to `<path>.<pid>` with
`time.perf_counter()` timestamps of its stages, and with a shared layer (Redis) every copy one line
with its time from `publish` to its hand-over to the streams in the same process:

- `B sub0=… sub1=… taken=… commit=… cb=… pubend=… settle=… n=…`: `sub0`, `sub1` the first and last
  input of the batch queued for the writer (`InputWriter.submit`); `taken` the writer took the
  batch; `commit` it committed (the on-commit hook); `cb` the loop runs the publication
  (`streaming.services._publish`), `pubend` it returned (every stream's writer was called; with
  Redis: the batch was queued for the sender); `settle` the loop answers the batch's requests;
  `n` the batch's inputs.
- `R <seconds>`: one copy's time from `publish` to its hand-over to this process's streams (Redis).

It wraps the functions those stages run (the benchmark's process only). The benchmarks read the
file (`python -m bench.stage_trace <path>.<pid>`, bench/stage_trace.py); this module lives beside
the supervisor, above the apps it wraps (pyproject.toml's layers), so `bench/` is never imported
by the core.
"""

from __future__ import annotations

import threading
import time
from typing import Any

_pc = time.perf_counter
_current = threading.local()


def install(path: str) -> None:
    import os

    from streaming import hub as hub_module
    from streaming import services as streams
    from workspaces import services as inputs
    from workspaces import writer

    out = open(f"{path}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 - for the process's life

    submit = writer.InputWriter.submit

    async def traced_submit(self: Any, request: Any) -> Any:
        object.__setattr__(request, "_trace_submit", _pc())  # a frozen dataclass
        return await submit(self, request)

    writer.InputWriter.submit = traced_submit  # type: ignore[method-assign]

    messages_create = inputs.messages_create

    def traced_messages_create(*, requests: list[Any]) -> Any:
        taken = _pc()
        submitted = [getattr(r, "_trace_submit", taken) for r in requests]
        batch = {"n": len(requests), "sub0": min(submitted), "sub1": max(submitted), "taken": taken}
        object.__setattr__(requests[0], "_trace_batch", batch)
        _current.batch = batch
        try:
            return messages_create(requests=requests)
        finally:
            _current.batch = None

    inputs.messages_create = traced_messages_create

    events_publish = streams.events_publish

    def traced_events_publish(messages: list[Any]) -> None:
        batch = getattr(_current, "batch", None)
        loop = writer.caller_loop()
        if batch is None or loop is None or not messages:
            events_publish(messages)
            return
        batch["commit"] = _pc()

        def publish() -> None:
            batch["cb"] = _pc()
            streams._publish(messages)
            batch["pubend"] = _pc()

        streams.EVENTS_PUBLISHED.inc(len(messages))
        loop.call_soon_threadsafe(publish)

    streams.events_publish = traced_events_publish

    settle = writer._settle

    def traced_settle(jobs: list[Any], outcomes: list[Any]) -> None:
        started = _pc()
        settle(jobs, outcomes)
        batch = getattr(jobs[0].request, "_trace_batch", None)
        if batch is not None and "cb" in batch:
            batch["settle"] = started
            out.write("B " + " ".join(f"{k}={v}" for k, v in batch.items()) + "\n")

    writer._settle = traced_settle

    published: dict[tuple[str, Any], float] = {}
    shared_publish, shared_deliver = hub_module._Shared.publish, hub_module._Shared.deliver

    def traced_publish(self: Any, messages: list[Any]) -> None:
        now = _pc()
        for group, message in messages:
            published[(group, message.get("seq"))] = now
        shared_publish(self, messages)

    def traced_deliver(self: Any, group: str, message: dict) -> None:
        sent = published.pop((group, message.get("seq")), None)
        if sent is not None:
            out.write(f"R {_pc() - sent}\n")
        shared_deliver(self, group, message)

    hub_module._Shared.publish = traced_publish  # type: ignore[method-assign]
    hub_module._Shared.deliver = traced_deliver  # type: ignore[method-assign]
