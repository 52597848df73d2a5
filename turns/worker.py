"""The turn worker's runtime (`manage.py turn_worker`): many turns at once on one event loop.

- At each wake-up (`common.wakeups`: a write made a turn due, or asked for a cancellation) and at
  the latest every `TURN_POLL_MS` (the fallback), the loop looks for due turns (a plain read; the
  claim's write transaction runs only when there is something to claim), leases up to
  `TURN_CONCURRENCY`, and looks for cancellations of the turns it runs; every third of
  `TURN_LEASE_SECONDS` it renews their leases (and unparks the heads of users left with none running).
- Each turn runs as a task with its deadline (`TURN_TIME_LIMIT_SECONDS` from its start).
- The turns' database work runs on one thread (`sync_to_async`, thread-sensitive), and their writes
  are group-committed by `LogWriter`: whatever the running turns have to write when the writer comes
  round goes in one transaction. The round (the read before the claim, the claim, cancellations,
  schedules) runs on a second thread of its own (`RoundThread`), so that what a wake-up announced
  is claimed while the running turns' writes are still queued, not after them; on SQLite the two
  threads' write transactions take turns on an in-process lock (no busy-handler sleeps between them). A turn's deltas are coalesced by its `TurnEmitter` (the first
  chunk at once, then every `TURN_DELTA_FLUSH_MS` or `TURN_DELTA_FLUSH_CHARS`).
- After each commit the live copies go to the streams (`Relay`): through the channel layer when it
  is shared (REDIS_URL), else posted to the core's `/internal/events` (CORTEX_CORE_URL, with
  CORTEX_RELAY_TOKEN). Streams
  also catch up from the log at their next event or reconnect, so a lost relay loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import httpx2
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from common import tracing
from common.errors import ErrorCode
from common.wakeups import Wakeups
from schedules import services as schedule_services
from streaming.services import events_publish_now
from turns import responders, services
from turns.inbox import selectors as inbox_selectors
from turns.inbox import services as inbox_services
from turns.responders import Runtime, TurnFailed, TurnPaused
from turns.services import Live, TurnRow, TurnState, TurnWrite
from usage.services import UsageDelta

logger = logging.getLogger(__name__)

db = sync_to_async  # thread-sensitive by default: the turns' queries on one thread

P = ParamSpec("P")
T = TypeVar("T")

# SQLite has one writer at a time, and a connection that finds the lock taken sleeps in SQLite's busy
# handler (1 to 100 ms between tries, whatever the holder does). The worker's two database threads
# take turns here first, so one waits exactly as long as the other's transaction.
_sqlite_writes = threading.Lock()


def writing(func: Callable[P, T]) -> Callable[P, T]:
    """`func` (one write transaction) holds the worker's SQLite write turn while it runs."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        if connection.vendor != "sqlite":
            return func(*args, **kwargs)
        with _sqlite_writes:
            return func(*args, **kwargs)

    return run


class RoundThread:
    """The round's database thread: the read before the claim, the claim, the cancellations, the
    schedules. On the turns' thread (`db`) a claim after a wake-up waited for every write queued
    there before it (the turns that just ended: their results, their endings), tens of milliseconds
    each on a loaded machine; here it waits at most for the one write running (SQLite) or for nothing
    (PostgreSQL: row locks; claims and writes of several workers already run side by side)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-round")

    def __call__(self, func: Callable[P, T]) -> Callable[P, Awaitable[T]]:
        return sync_to_async(func, thread_sensitive=False, executor=self._executor)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self(connections.close_all)()
        self._executor.shutdown(wait=False)


class TurnLost(Exception):
    """The turn is no longer this worker's (its lease expired and another worker ended it)."""


class CancelSeen(Exception):
    """A write found the turn's cancellation requested (before the worker's poll did)."""


class Relay:
    """Hands committed events to the core's streams (see the module docstring), in commit order:
    one sender task, so the claim's and the writer's batches never overtake each other (a stream
    that sees a later seq first has to fetch the gap from the database). Posts are bounded in size
    (`RELAY_CHUNK_BYTES`) and retried (`RELAY_ATTEMPTS`): a stream that misses a notify while idle
    would otherwise wait for its next event or reconnect to see the end of a turn."""

    RELAY_CHUNK_BYTES = 192 * 1024
    RELAY_ATTEMPTS = 4

    def __init__(self) -> None:
        self._http: httpx2.AsyncClient | None = None
        self._pending: Live = []
        self._wake = asyncio.Event()
        self._sender: asyncio.Task | None = None

    def publish(self, live: Live) -> None:
        if not live:
            return
        self._pending.extend(live)
        self._wake.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._run(), name="turn-relay")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        chunk: Live = []
        size = 0
        for group, message in batch:
            item = len(message["json"]) + 128
            if chunk and size + item > self.RELAY_CHUNK_BYTES:
                await self._send(chunk)
                chunk, size = [], 0
            chunk.append((group, message))
            size += item
        if chunk:
            await self._send(chunk)

    async def _send(self, live: Live) -> None:
        if settings.REDIS_URL:
            await events_publish_now(live)
            return
        core = settings.CORTEX["CORE_URL"]
        token = settings.CORTEX["RELAY_TOKEN"]
        if not core or not token:
            return  # streams find these events at their next event or reconnect
        if self._http is None:
            self._http = httpx2.AsyncClient(
                base_url=core.rstrip("/"),
                headers={"Authorization": f"Bearer {token}"},
                timeout=httpx2.Timeout(5.0),
            )
        for attempt in range(self.RELAY_ATTEMPTS):
            try:
                response = await self._http.post("/internal/events", json={"events": live})
                if response.status_code == 204:
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500:
                    break  # refused: sending it again changes nothing
            except httpx2.HTTPError as exc:
                problem = repr(exc)
            await asyncio.sleep(0.1 * 2**attempt)
        logger.warning("relaying %d events to the core failed (%s)", len(live), problem)

    async def aclose(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        with contextlib.suppress(Exception):  # what is still queued, once (the core may be gone)
            await asyncio.wait_for(self._flush(), timeout=5)
        if self._http is not None:
            await self._http.aclose()


class LogWriter:
    """Group commit for the worker's turns: one transaction per round for every queued write."""

    def __init__(self, owner: str, relay: Relay) -> None:
        self.owner = owner
        self.relay = relay
        self._pending: list[tuple[TurnWrite, asyncio.Future[TurnState]]] = []
        self._wake = asyncio.Event()

    async def submit(self, write: TurnWrite) -> TurnState:
        future: asyncio.Future[TurnState] = asyncio.get_running_loop().create_future()
        self._pending.append((write, future))
        self._wake.set()
        return await future

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                states, live = await db(writing(services.turns_write))(
                    owner=self.owner, writes=[write for write, _ in batch]
                )
            except Exception as exc:  # noqa: BLE001 - each waiting turn gets the failure
                logger.exception("writing %d turn updates failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.relay.publish(live)
            for write, future in batch:
                if not future.done():
                    future.set_result(states[write.turn_id])


class TurnEmitter:
    """A running turn's output: coalesced deltas and its other events, through the `LogWriter`."""

    def __init__(self, turn: TurnRow, writer: LogWriter, wakeups: Wakeups | None = None) -> None:
        self.turn = turn
        self.writer = writer
        self.wakeups = wakeups
        self.buffer: list[str] = []
        self.buffered = 0
        self.started_text = False
        self.flusher: asyncio.Task | None = None
        # tool.progress, per call: when the last one was written, and the newest one held back.
        self.progress_sent: dict[str, float] = {}
        self.progress_held: dict[str, tuple[dict[str, Any], asyncio.Task]] = {}
        self.usage = UsageDelta()  # recorded with the turn's pause or end

    async def _write(self, write: TurnWrite) -> None:
        if self.buffer:  # text waiting for its flush goes first, in order
            write.events.insert(0, (services.DELTA, {"text": "".join(self.buffer)}))
            self.buffer, self.buffered = [], 0
        state = await self.writer.submit(write)
        if state.lost:
            raise TurnLost
        if state.cancel_requested and write.finish is None and write.pause is None:
            raise CancelSeen

    async def delta(self, text: str) -> None:
        if not text:
            return
        self.buffer.append(text)
        self.buffered += len(text)
        if not self.started_text or self.buffered >= settings.CORTEX["TURN_DELTA_FLUSH_CHARS"]:
            # The first chunk at once: what a user waits for is the answer starting.
            self.started_text = True
            await self._write(TurnWrite(self.turn.id))
        elif self.flusher is None:
            self.flusher = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(settings.CORTEX["TURN_DELTA_FLUSH_MS"] / 1000)
        self.flusher = None
        if self.buffer:
            with contextlib.suppress(Exception):  # seen again by the turn's next write
                await self._write(TurnWrite(self.turn.id))

    async def tool_call(self, *, call_id: str, expert: str, tool: str, arguments: Any) -> None:
        data = {"call_id": call_id, "expert": expert, "tool": tool, "arguments": arguments}
        self.usage.tool_calls += 1
        await self._write(TurnWrite(self.turn.id, events=[(services.TOOL_CALL, data)]))

    PROGRESS_INTERVAL = 0.25  # at most 4 tool.progress a second per call (CONTRACT.md)

    async def tool_progress(
        self, *, call_id: str, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """The expert's progress on a call. Within PROGRESS_INTERVAL of the last one written, the
        newest is held and written when the interval ends (the ones between are dropped: a bar
        needs the latest value, not every step); a call's result drops what is still held."""
        data: dict[str, Any] = {"call_id": call_id, "progress": progress}
        data.update({key: value for key, value in (("total", total), ("message", message)) if value is not None})
        held = self.progress_held.get(call_id)
        if held is not None:
            self.progress_held[call_id] = (data, held[1])
            return
        if self.progress_sent.get(call_id, 0.0) + self.PROGRESS_INTERVAL <= time.monotonic():
            await self._progress_write(call_id, data)
            return
        self.progress_held[call_id] = (data, asyncio.create_task(self._progress_later(call_id)))

    async def _progress_write(self, call_id: str, data: dict[str, Any]) -> None:
        # The interval runs from the commit of the last one (its event's timestamp), not its start.
        self.progress_sent[call_id] = time.monotonic()
        try:
            await self._write(TurnWrite(self.turn.id, events=[(services.TOOL_PROGRESS, data)]))
        finally:
            self.progress_sent[call_id] = time.monotonic()

    async def _progress_later(self, call_id: str) -> None:
        while (wait := self.progress_sent.get(call_id, 0.0) + self.PROGRESS_INTERVAL - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        held = self.progress_held.pop(call_id, None)
        if held is None:
            return
        with contextlib.suppress(Exception):  # a lost or cancelled turn is seen by its next write
            await self._progress_write(call_id, held[0])

    def _progress_drop(self, call_id: str) -> None:
        held = self.progress_held.pop(call_id, None)
        if held is not None:
            held[1].cancel()
        self.progress_sent.pop(call_id, None)

    async def tool_task(self, *, call_id: str, task_id: str, status: str) -> None:
        data = {"call_id": call_id, "task_id": task_id, "status": status}
        with contextlib.suppress(CancelSeen):  # the event is written; the cancel is the caller's to act on
            await self._write(TurnWrite(self.turn.id, events=[(services.TOOL_TASK, data)]))

    async def tool_result(self, *, call_id: str, result: Any = None, error: Any = None) -> None:
        self._progress_drop(call_id)
        data: dict[str, Any] = {"call_id": call_id}
        data.update({"error": error} if error is not None else {"result": result})
        asked = (self.turn.state or {}).get("asked") or {}
        done_with_task = bool(asked.get("task_id")) and asked.get("call_id") == call_id
        write = TurnWrite(self.turn.id, events=[(services.TOOL_RESULT, data)], state_clear=done_with_task)
        await self._write(write)

    async def question(self, data: dict[str, Any], expires_at: Any) -> dict[str, Any]:
        """A question an expert asks in the middle of a call (`elicitation/create`): asked in every
        participant's log, then its answer awaited on the event loop (a read at each wake-up, the
        answer's among them, and every TURN_POLL_MS; no thread waits) until `expires_at`, the call's
        own deadline; unanswered, it is a "cancel"."""
        request_id = uuid.uuid4()
        await self._write(TurnWrite(self.turn.id, ask=({**data, "request_id": str(request_id)}, expires_at)))
        poll = settings.CORTEX["TURN_POLL_MS"] / 1000
        while True:
            seen = self.wakeups.generation if self.wakeups is not None else 0
            answer = await db(inbox_selectors.question_answer_of)(request_id=request_id)
            if answer is not None:
                return answer
            if timezone.now() >= expires_at:
                self.writer.relay.publish(await db(inbox_services.question_expire)(request_id=request_id))
                return await db(inbox_selectors.question_answer_of)(request_id=request_id) or {"action": "cancel"}
            if self.wakeups is not None:
                await self.wakeups.wait(poll, seen)
            else:
                await asyncio.sleep(poll)

    async def finish(self, write: TurnWrite) -> None:
        if self.flusher is not None:
            self.flusher.cancel()
            self.flusher = None
        for call_id in list(self.progress_held):
            self._progress_drop(call_id)
        write.usage, self.usage = self.usage, UsageDelta()
        await self._write(write)


class TurnWorker:
    def __init__(self, *, owner: str | None = None) -> None:
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.relay = Relay()
        self.writer = LogWriter(self.owner, self.relay)
        self.runtime = Runtime()
        self.wakeups = Wakeups()
        self.round_db = RoundThread()
        self.tasks: dict[uuid.UUID, asyncio.Task] = {}
        self.cancel_reason: dict[uuid.UUID, str] = {}
        self.next_schedules = 0.0  # monotonic: when to look at the schedules next
        self.schedules_seen = 0.0  # monotonic: when they were last looked at

    async def run(self, stop: asyncio.Event) -> None:
        cortex = settings.CORTEX
        poll = cortex["TURN_POLL_MS"] / 1000
        renew_every = cortex["TURN_LEASE_SECONDS"] / 3
        next_renew = time.monotonic() + renew_every
        writer = asyncio.create_task(self.writer.run(), name="turn-log-writer")
        await self.wakeups.start()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                seen = self.wakeups.generation
                try:
                    await self._round()
                    if time.monotonic() >= next_renew:
                        next_renew = time.monotonic() + renew_every
                        await self._renew()
                        await self.round_db(writing(services.turns_unpark_stranded))()
                except Exception:
                    logger.exception("turn worker round failed; trying again")
                # The next round: at a wake-up (a turn became due, a cancellation), when the earliest
                # schedule is due, at the stop, or after the poll interval (the fallback).
                timeout = min(poll, max(0.0, self.next_schedules - time.monotonic()))
                woken = asyncio.ensure_future(self.wakeups.wait(timeout, seen))
                await asyncio.wait([woken, stopping], return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                if self.wakeups.generation != seen:
                    # Maybe a schedule made or changed (wake-ups carry no data): look again soon,
                    # at most every SCHEDULE_WAKE_GAP whatever the rate of wake-ups.
                    self.next_schedules = min(self.next_schedules, self.schedules_seen + self.SCHEDULE_WAKE_GAP)
            await self._shutdown()
        finally:
            stopping.cancel()
            await self.wakeups.aclose()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self.relay.aclose()
            await self.runtime.aclose()
            await self.round_db.aclose()

    async def _round(self) -> None:
        """The claim first: what a wake-up announced (an answer, an input's turn) starts before
        anything else of the round runs on the database thread, and the turns it started are not
        asked about cancellations (the claim just read them). The read before the claim stays even
        after a wake-up: the worker's own writes wake it too, and a claim that finds nothing would
        still take SQLite's write lock (measured: the core's answers waited for it)."""
        claimed: set[uuid.UUID] = set()
        free = settings.CORTEX["TURN_CONCURRENCY"] - len(self.tasks)
        if free > 0 and await self.round_db(services.turns_due_exist)():
            rows, live = await self.round_db(writing(services.turns_claim))(owner=self.owner, limit=free)
            self.relay.publish(live)
            for row in rows:
                claimed.add(row.id)
                self.tasks[row.id] = asyncio.create_task(self._run_turn(row), name=f"turn-{row.id}")
            if rows:
                # Let the turns just started reach their first write (and the log writer pick it up)
                # before the rest of the round queues its reads on the database thread.
                for _ in range(3):
                    await asyncio.sleep(0)
        if time.monotonic() >= self.next_schedules:
            await self._schedules()
        if running := [turn_id for turn_id in self.tasks if turn_id not in claimed]:
            for turn_id in await self.round_db(services.turns_cancel_requested)(owner=self.owner, turn_ids=running):
                self._stop_turn(turn_id, "cancel")

    SCHEDULE_WAKE_GAP = 0.1  # seconds

    async def _schedules(self) -> None:
        """Due schedules become inputs (and so turns, claimed below like any other). One read (the
        earliest `next_run_at`, on its index) tells when to look next: the worker sleeps until then,
        or until a wake-up (a schedule made, changed or resumed calls `wake()`), or at the latest
        SCHEDULE_POLL_MS (the fallback); the claim's write runs only when one is due. Any number of
        workers may do this: each due time runs once (`schedules.services`)."""
        self.schedules_seen = time.monotonic()
        self.next_schedules = self.schedules_seen + settings.SCHEDULE_POLL_MS / 1000
        try:
            due = await self.round_db(schedule_services.schedules_next_due)()
            if due is not None and due <= timezone.now():
                self.relay.publish(await self.round_db(writing(schedule_services.schedules_run_due))())
                due = await self.round_db(schedule_services.schedules_next_due)()
            if due is not None:  # a little after it, so that it is due when we look (and no spin
                # on one still due: another worker's claim holds it, or more than one batch was due)
                wait = max(0.05, (due - timezone.now()).total_seconds() + 0.002)
                self.next_schedules = min(self.next_schedules, time.monotonic() + wait)
        except Exception:
            logger.exception("running due schedules failed; trying again")

    async def _renew(self) -> None:
        """Renew the leases of the running turns (a write with no events); one that is no longer
        ours (we were too slow, another worker ended it) is stopped."""
        turn_ids = list(self.tasks)
        states = await asyncio.gather(*(self.writer.submit(TurnWrite(turn_id)) for turn_id in turn_ids))
        for turn_id, state in zip(turn_ids, states, strict=True):  # one transaction for all of them
            if state.lost:
                self._stop_turn(turn_id, "lost")
            elif state.cancel_requested:
                self._stop_turn(turn_id, "cancel")

    def _stop_turn(self, turn_id: uuid.UUID, reason: str) -> None:
        task = self.tasks.get(turn_id)
        if task is not None and turn_id not in self.cancel_reason:
            self.cancel_reason[turn_id] = reason
            task.cancel()

    async def _shutdown(self) -> None:
        """SIGTERM: the running turns end as failed now (not after their lease: nobody waits)."""
        for turn_id in list(self.tasks):
            self._stop_turn(turn_id, "shutdown")
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _run_turn(self, turn: TurnRow) -> None:
        attributes = {"cortex.turn.id": str(turn.id), "cortex.turn.kind": turn.kind}
        with tracing.span("cortex.turn", parent=turn.trace_context, attributes=attributes):
            await self._run_turn_traced(turn)

    async def _run_turn_traced(self, turn: TurnRow) -> None:
        emitter = TurnEmitter(turn, self.writer, self.wakeups)
        respond = responders.RESPONDERS.get(turn.kind)
        try:
            try:
                if respond is None:
                    raise TurnFailed(ErrorCode.INTERNAL_ERROR, f"No responder {turn.kind!r}.")
                remaining = (turn.deadline - timezone.now()).total_seconds()
                async with asyncio.timeout(max(remaining, 0)):
                    content = await respond(turn, emitter, self.runtime)
                final = TurnWrite(turn.id, finish="completed", content=content)
            except TurnPaused as paused:  # it waits in the inbox; whichever worker claims it goes on
                final = TurnWrite(turn.id, pause=paused.pause, events=list(paused.pause.events))
            except (CancelSeen, responders.TurnCancelled):
                final = TurnWrite(turn.id, finish="cancelled")
            except asyncio.CancelledError:
                reason = self.cancel_reason.get(turn.id, "shutdown")
                if reason == "lost":
                    return
                if reason == "cancel":
                    final = TurnWrite(turn.id, finish="cancelled")
                else:
                    final = TurnWrite(
                        turn.id,
                        finish="failed",
                        error="The turn worker was stopped.",
                        error_code=ErrorCode.SERVICE_UNAVAILABLE,
                    )
            except TimeoutError:
                limit = settings.CORTEX["TURN_TIME_LIMIT_SECONDS"]
                final = TurnWrite(
                    turn.id, finish="failed", error=f"The turn took longer than {limit}s.", error_code=ErrorCode.TIMEOUT
                )
            except TurnFailed as exc:
                final = TurnWrite(turn.id, finish="failed", error=exc.message, error_code=exc.code)
            except TurnLost:
                return
            except Exception as exc:  # noqa: BLE001 - a bug or an unexpected answer ends the turn, not the worker
                logger.exception("turn %s failed", turn.id)
                final = TurnWrite(
                    turn.id,
                    finish="failed",
                    error=f"The turn failed: {type(exc).__name__}",
                    error_code=ErrorCode.INTERNAL_ERROR,
                )
            with contextlib.suppress(TurnLost):
                await emitter.finish(final)
        except Exception:
            logger.exception("ending turn %s failed; its lease will expire and another worker ends it", turn.id)
        finally:
            self.tasks.pop(turn.id, None)
            self.cancel_reason.pop(turn.id, None)
