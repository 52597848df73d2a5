"""Draining the memory outbox: claim due entries, call the memory service, record the outcome.

Three drainers share `outbox_drain`, and the claim (a lease on each row) keeps them apart:
- the core process, kicked by `transaction.on_commit` after each input or deletion: a daemon thread
  drains at once, so POST /input never waits for the memory service (nor notices it is down);
- `manage.py memory_outbox_worker`: polls for due entries, which is how retries (exponential
  backoff) and anything a crashed core left behind get delivered;
- `manage.py sync_memory`: drains by hand, optionally ignoring the backoff schedule.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connections, transaction
from opentelemetry.trace import SpanKind

from common import tracing, wakeups
from common.errors import CortexError, ErrorCode
from mcp_services import client
from mcp_services.client import ServiceToolError, ServiceUnavailable, UnsendableArguments
from mcp_services.models import OutboxEntry
from mcp_services.outbox import services

logger = logging.getLogger(__name__)

KICK_GATHER_SECONDS = 0.1
KICK_GATHER_MAX_SECONDS = 1.0
# One `store_inputs` call carries at most this many items and about this many bytes of content.
STORE_BATCH_ITEMS = 500
STORE_BATCH_BYTES = 2 * 1024 * 1024

TOOLS: dict[str, str] = {OutboxEntry.Kind.STORE: "store_input", OutboxEntry.Kind.DELETE: "delete_memory"}


@dataclass
class DrainResult:
    delivered: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def claimed(self) -> int:
        return self.delivered + self.retried + self.failed

    def add(self, other: DrainResult) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.failed += other.failed


def _store_chunks(stores: list[OutboxEntry]) -> list[list[OutboxEntry]]:
    """Stores grouped for `store_inputs` calls, bounded in items and (roughly) in bytes."""
    chunks: list[list[OutboxEntry]] = []
    size = 0
    for entry in stores:
        item_size = len(entry.arguments["input_data"].get("content", "")) + 512
        if not chunks or len(chunks[-1]) >= STORE_BATCH_ITEMS or size + item_size > STORE_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += item_size
    return chunks


async def _send_all(entries: list[OutboxEntry], concurrency: int) -> list[BaseException | None]:
    """Deliver a batch: its stores in `store_inputs` calls, its deletes one call each."""
    memory = client.memory()
    gate = asyncio.Semaphore(concurrency)
    outcomes: dict[int, BaseException | None] = {}

    async def send_stores(chunk: list[OutboxEntry]) -> None:
        async with gate:
            try:
                # One delivery serves several inputs: it continues the first one's trace and links the others'.
                traced = [entry.trace_context for entry in chunk if entry.trace_context]
                with tracing.span(
                    "cortex.outbox.deliver",
                    parent=traced[0] if traced else "",
                    links=traced[1:],
                    kind=SpanKind.PRODUCER,
                    attributes={"cortex.outbox.entries": len(chunk)},
                ):
                    answer = await memory.call_tool("store_inputs", {"items": [entry.arguments for entry in chunk]})
                results = answer["results"]
                if len(results) != len(chunk):
                    raise ServiceToolError(
                        ErrorCode.TOOL_ERROR, f"store_inputs answered {len(results)} results for {len(chunk)} items"
                    )
            except CortexError as exc:
                outcomes.update((entry.id, exc) for entry in chunk)
                return
        for entry, result in zip(chunk, results, strict=True):
            # "stored" and "duplicate" (an earlier attempt got through) both mean delivered.
            if result.get("status") == "invalid":
                code = result.get("code") if result.get("code") in ErrorCode else ErrorCode.INVALID_INPUT
                outcomes[entry.id] = ServiceToolError(code, str(result.get("error")))
            else:
                outcomes[entry.id] = None

    async def send(entry: OutboxEntry) -> None:
        async with gate:
            try:
                await memory.call_tool(TOOLS[entry.kind], entry.arguments)
            except CortexError as exc:
                outcomes[entry.id] = exc
                return
            outcomes[entry.id] = None

    # An entry whose arguments cannot be encoded would fail its whole `store_inputs` call (and,
    # sent as is, break the shared connection mid-write): it is set aside before anything is sent.
    for entry in entries:
        problem = client.encoding_error(entry.arguments)
        if problem is not None:
            outcomes[entry.id] = UnsendableArguments(f"{TOOLS[entry.kind]}: arguments cannot be sent ({problem})")
    sendable = [entry for entry in entries if entry.id not in outcomes]
    stores = [entry for entry in sendable if entry.kind == OutboxEntry.Kind.STORE]
    others = [entry for entry in sendable if entry.kind != OutboxEntry.Kind.STORE]
    await asyncio.gather(*(send_stores(chunk) for chunk in _store_chunks(stores)), *(send(entry) for entry in others))
    return [outcomes[entry.id] for entry in entries]


def give_up(entry: OutboxEntry, outcome: BaseException) -> bool:
    """Retrying cannot help: the arguments cannot be sent, the service refused them as invalid, or
    it failed on this very entry (answered with an error) OUTBOX_MAX_TOOL_ERRORS times. An
    unreachable service is retried for as long as it takes: that is what the outbox is for."""
    if isinstance(outcome, UnsendableArguments):
        return True
    if isinstance(outcome, ServiceToolError):
        return outcome.permanent or entry.attempts + 1 >= settings.CORTEX["OUTBOX_MAX_TOOL_ERRORS"]
    return False


def outbox_drain_batch(*, ignore_schedule: bool = False) -> DrainResult:
    """Claim and deliver one batch. Entries in a batch never depend on each other: a delete is
    claimed only once no earlier store of its conversation is pending (`outbox_claim`)."""
    cortex = settings.CORTEX
    result = DrainResult()
    entries = services.outbox_claim(limit=cortex["OUTBOX_BATCH_SIZE"], ignore_schedule=ignore_schedule)
    if not entries:
        return result
    # Bounded by the lease: an entry still in flight after it may be claimed (and sent) again.
    timeout = min(cortex["OUTBOX_LEASE_SECONDS"], cortex["SERVICE_TIMEOUT_SECONDS"] * (len(entries) + 2))
    try:
        outcomes = client.call(lambda: _send_all(entries, cortex["OUTBOX_CONCURRENCY"]), timeout=timeout)
    except ServiceUnavailable as exc:
        outcomes = [exc] * len(entries)
    delivered = [entry.id for entry, outcome in zip(entries, outcomes, strict=True) if outcome is None]
    result.delivered = len(delivered)
    with transaction.atomic():  # one short write transaction for the whole batch's outcomes
        services.outbox_mark_delivered(entry_ids=delivered)
        services.outbox_forget_purged_users(
            user_ids=[
                entry.user_id
                for entry, outcome in zip(entries, outcomes, strict=True)
                if outcome is None and entry.arguments.get("everything")
            ]
        )
        for entry, outcome in zip(entries, outcomes, strict=True):
            if outcome is None:
                continue
            if give_up(entry, outcome):
                logger.error("memory outbox entry %s cannot be delivered; marked failed: %s", entry.id, outcome)
                services.outbox_mark_failed(entry=entry, error=f"{type(outcome).__name__}: {outcome}")
                result.failed += 1
            else:
                services.outbox_mark_retry(entry=entry, error=str(outcome))
                result.retried += 1
    if result.retried:
        first_error = next(outcome for outcome in outcomes if outcome is not None)
        logger.warning("memory outbox: %d deliveries will be retried (%s)", result.retried, first_error)
    return result


def outbox_drain(
    *, ignore_schedule: bool = False, max_batches: int | None = None, backlog_only: bool = False
) -> DrainResult:
    """Drain until nothing is due (or a batch had to be retried: the service is struggling).

    `backlog_only` (the drainers that run on their own: the core's kicker, the worker): go on at
    once only after a full batch (a backlog); after a partial one, stop, and let the caller come
    back after its pause. Under a steady stream of inputs something is always due again by the
    time a batch is delivered: draining on at once would deliver many small batches (a claim, a
    round of calls, the memory service's write and the outcomes' write each, all taking turns on
    SQLite's write lock with the inputs), where a pause lets one batch serve them all.
    """
    total = DrainResult()
    batches = 0
    limit = settings.CORTEX["OUTBOX_BATCH_SIZE"]
    while max_batches is None or batches < max_batches:
        batch = outbox_drain_batch(ignore_schedule=ignore_schedule)
        total.add(batch)
        batches += 1
        if batch.claimed == 0 or batch.retried or (backlog_only and batch.claimed < limit):
            break
    return total


class _Kicker:
    """The core's drainer thread: wakes on `kick()` and drains; coalesces bursts of kicks."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cortex-memory-outbox", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            gather(self._wake)
            try:
                drained = outbox_drain(backlog_only=True)
                if drained.claimed and not drained.retried:
                    # What became due meanwhile (a delete after the stores just delivered, an
                    # input whose kick came during the drain) is drained after the next gather.
                    self._wake.set()
            except Exception:
                logger.exception("memory outbox drain failed; the worker will retry")
                # The thread keeps its connection between drains; after a failure, a fresh one.
                connections.close_all()


_kicker = _Kicker()


def deliver_after_commit() -> None:
    """Inside the transaction that wrote outbox entries: have them delivered once it commits,
    without making anyone wait. The `memory_outbox_worker` is woken (`MEMORY_DRAIN_BY_WORKER`, as
    `run_cortex` runs it: one wake-up per transaction, PostgreSQL's NOTIFY inside it), or this
    process drains on a thread of its own (`kick`, with `MEMORY_DRAIN_ON_COMMIT`)."""
    if settings.CORTEX["MEMORY_DRAIN_BY_WORKER"]:
        wakeups.wake(topic="outbox")
    else:
        transaction.on_commit(kick)


def kick() -> None:
    """After commit: drain what was just written, on this process's drainer thread."""
    if settings.CORTEX["MEMORY_DRAIN_ON_COMMIT"]:
        _kicker.kick()


def gather(woken: threading.Event) -> None:
    """After a wake-up: let a burst of inputs gather, so that one drain (two short write transactions,
    one round of calls and the memory service's write) serves many, instead of competing with every
    input for SQLite's write lock (and, in the core, the GIL). A lone input waits KICK_GATHER_SECONDS;
    while wake-ups keep coming, the gather goes on, up to KICK_GATHER_MAX_SECONDS (under SQLite's
    write turn each of a drain's writes gets its turn between the inputs' batches at once, so draining
    every 0.1 s meant many small drains: their fixed costs took a third of the core's CPU per input)."""
    first = time.monotonic()
    while True:
        woken.clear()
        time.sleep(KICK_GATHER_SECONDS)
        if not woken.is_set() or time.monotonic() - first >= KICK_GATHER_MAX_SECONDS:
            return
