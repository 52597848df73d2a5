"""Wake-ups: a write that makes a turn due tells the turn workers at once, instead of leaving it to
their next poll (TURN_POLL_MS, which stays as the fallback: a lost wake-up costs one poll's delay).

    from turns.wakeups import wake
    wake()  # inside the transaction that made a turn due (or just after it)

`wake()` is the one call for every such write (an input's turn that is its conversation's head, an
inbox answer, a turn that ended and freed its conversation or its user's share, a cancellation; and
for what other apps add: a connection made, a schedule due, a task completed). It signals only
once the transaction commits (nothing on a rollback), so a woken worker always finds the change.
A wake-up carries no data: a worker that gets one runs a round (claim, cancellations) and wakes
the turns awaiting an answer mid-call, and that is all. A stray or forged one costs one read.

How it travels (`TURN_WAKEUPS`, default `auto`):
- `postgresql` (auto on PostgreSQL): `NOTIFY cortex_turns_wake` in the transaction itself, which
  PostgreSQL delivers at commit; workers `LISTEN` on one connection of their own.
- `redis` (auto with REDIS_URL on SQLite): a publish after the commit; workers subscribe.
- `loopback` (auto on the embedded default): each worker binds a UDP port on 127.0.0.1 and
  registers it as a file in TURN_WAKEUP_DIR (beside the SQLite file); a wake-up is one datagram to
  each registered port after the commit.
- `off`: polling only.

A topic keeps wake-ups of different waiters apart (`wake(topic=...)`, `Wakeups(topic)`): "turns" (the
turn workers: the channels and the directory above) and "outbox" (the memory outbox worker, woken
by the core's commits when it delivers memory: `MEMORY_DRAIN_BY_WORKER`). A synchronous loop waits on
a `threading.Event` set by `listen_in_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction

logger = logging.getLogger(__name__)

PG_CHANNEL = "cortex_turns_wake"
TOPICS = ("turns", "outbox")
TRANSPORTS = ("auto", "postgresql", "redis", "loopback", "off")


def transport(using: str = DEFAULT_DB_ALIAS) -> str:
    chosen = settings.CORTEX["TURN_WAKEUPS"]
    if chosen != "auto":
        return chosen
    if connections[using].vendor == "postgresql":
        return "postgresql"
    return "redis" if settings.REDIS_URL else "loopback"


def pg_channel(topic: str = "turns") -> str:
    return PG_CHANNEL if topic == "turns" else f"cortex_{topic}_wake"


def redis_channel(topic: str = "turns") -> str:
    """One channel per database, so deployments sharing a Redis do not wake each other."""
    db = settings.DATABASES[DEFAULT_DB_ALIAS]
    key = f"{db.get('HOST', '')}:{db.get('PORT', '')}/{db['NAME']}".encode()
    return f"cortex:{topic}:wake:{hashlib.sha256(key).hexdigest()[:16]}"


def wake(using: str = DEFAULT_DB_ALIAS, *, topic: str = "turns") -> None:
    """Wake the topic's waiters (the turn workers by default) once the current transaction commits
    (at once outside one)."""
    kind = transport(using)
    if kind == "off":
        return
    connection = connections[using]
    notified, publish, datagrams = _signals[topic]
    if kind == "postgresql":
        if connection.in_atomic_block:
            if any(entry[1] is notified for entry in connection.run_on_commit):
                return  # already in this transaction (PostgreSQL folds equal notifications anyway)
            transaction.on_commit(notified, using=using)  # a marker, dropped with the transaction
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {pg_channel(topic)}")
        return
    send = publish if kind == "redis" else datagrams
    if connection.in_atomic_block and any(entry[1] is send for entry in connection.run_on_commit):
        return  # one signal per transaction
    transaction.on_commit(send, using=using)


def _signals_of(topic: str) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    """The topic's own functions (one each, so that a transaction's callbacks can be told apart):
    the PostgreSQL marker of a transaction that has notified (PostgreSQL delivers the NOTIFY itself
    at commit), and the senders after commit through Redis and through loopback datagrams."""

    def notified() -> None:
        pass

    return notified, functools.partial(_redis_publish, topic), functools.partial(_loopback_send, topic)


# --- the senders (after commit, in whichever thread committed) ---------------------------------------

_redis_lock = threading.Lock()
_redis_client: Any = None


def _redis_publish(topic: str) -> None:
    global _redis_client
    try:
        with _redis_lock:
            if _redis_client is None:
                import redis

                _redis_client = redis.Redis.from_url(
                    str(settings.REDIS_URL), socket_timeout=2, socket_connect_timeout=2
                )
        _redis_client.publish(redis_channel(topic), b"1")
    except Exception:  # noqa: BLE001 - the workers' poll finds the turn anyway
        logger.warning("%s wake-up through Redis failed; the waiters' poll will find it", topic, exc_info=True)


def wakeup_dir(topic: str = "turns") -> Path:
    """The turn workers' registrations in TURN_WAKEUP_DIR, another topic's in a folder of it."""
    base = Path(settings.CORTEX["TURN_WAKEUP_DIR"])
    return base if topic == "turns" else base / topic


_udp: socket.socket | None = None


def _loopback_send(topic: str) -> None:
    global _udp
    try:
        entries = os.listdir(wakeup_dir(topic))
    except OSError:
        return  # no worker has registered
    if _udp is None:
        _udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _udp.setblocking(False)
    for name in entries:
        port = name.rpartition("-")[2]
        if port.isdigit():
            with contextlib.suppress(OSError):  # a full buffer already holds a wake-up
                _udp.sendto(b"1", ("127.0.0.1", int(port)))


_signals = {topic: _signals_of(topic) for topic in TOPICS}


# --- the workers' side ---------------------------------------------------------------------------------


class Wakeups:
    """A turn worker's wake-ups (or another topic's waiter): `wait(timeout, since)` returns at the
    next wake-up or after `timeout` (then the caller polls). `start()` runs the listener of this
    process's transport, reconnecting after failures; until it is listening, and whenever it cannot,
    the worker just polls. `on_wake` is called at each wake-up too (on the loop's thread)."""

    RETRY_SECONDS = 2.0

    def __init__(self, topic: str = "turns", on_wake: Callable[[], Any] | None = None) -> None:
        assert topic in TOPICS, topic
        self.topic = topic
        self.on_wake = on_wake
        self.kind = transport()
        self._future: asyncio.Future[None] | None = None
        self._task: asyncio.Task | None = None
        self._registered: Path | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self.listening = asyncio.Event()
        self.generation = 0  # wake-ups received

    def notify(self) -> None:
        self.generation += 1
        if self.on_wake is not None:
            self.on_wake()
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, timeout: float, since: int) -> bool:
        """Until a wake-up later than `since` (a `generation` read before the caller last looked),
        True, or False after `timeout`. One that came while the caller was looking counts."""
        if self.generation != since:
            return True
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except TimeoutError:
            return False
        return True

    async def start(self) -> None:
        if self.kind == "off":
            return
        listen: Callable[[], Any] = {
            "postgresql": self._listen_postgresql,
            "redis": self._listen_redis,
            "loopback": self._listen_loopback,
        }[self.kind]
        self._task = asyncio.create_task(self._keep(listen), name=f"{self.topic}-wakeups-{self.kind}")

    async def _keep(self, listen: Callable[[], Any]) -> None:
        while True:
            try:
                await listen()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the poll goes on meanwhile
                logger.warning(
                    "%s wake-ups (%s) stopped; polling until they are back", self.topic, self.kind, exc_info=True
                )
            self.listening.clear()
            self.notify()  # something may have been missed while not listening: look now
            await asyncio.sleep(self.RETRY_SECONDS)

    async def _listen_postgresql(self) -> None:
        import psycopg

        params = connections[DEFAULT_DB_ALIAS].get_connection_params()
        for key in ("cursor_factory", "context", "prepare_threshold", "server_side_binding", "pool"):
            params.pop(key, None)
        conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
        async with conn:
            await conn.execute(f"LISTEN {pg_channel(self.topic)}")
            self.listening.set()
            self.notify()
            async for _ in conn.notifies():
                self.notify()

    async def _listen_redis(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(str(settings.REDIS_URL), socket_connect_timeout=5)
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(redis_channel(self.topic))
            self.listening.set()
            self.notify()
            while True:
                message = await pubsub.get_message(timeout=30)
                if message is not None:
                    self.notify()
        finally:
            await client.aclose()

    async def _listen_loopback(self) -> None:
        loop = asyncio.get_running_loop()
        wakeups = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                wakeups.notify()

        closed = loop.create_future()

        class Closing(Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                if not closed.done():
                    closed.set_result(None)

        self._transport, _ = await loop.create_datagram_endpoint(Closing, local_addr=("127.0.0.1", 0))
        try:
            port = self._transport.get_extra_info("sockname")[1]
            directory = wakeup_dir(self.topic)
            directory.mkdir(parents=True, exist_ok=True)
            _prune(directory)
            self._registered = directory / f"{os.getpid()}-{port}"
            self._registered.touch()
            self.listening.set()
            self.notify()
            await closed
        finally:
            self._unregister()
            self._transport.close()

    def _unregister(self) -> None:
        if self._registered is not None:
            with contextlib.suppress(OSError):
                self._registered.unlink()
            self._registered = None

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._unregister()


def _prune(directory: Path) -> None:
    """Drop the registrations of workers that are gone (killed without unregistering)."""
    for entry in directory.iterdir():
        pid = entry.name.partition("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                entry.unlink()
        except PermissionError:
            pass


def listen_in_thread(topic: str, event: threading.Event) -> None:
    """For a synchronous loop (the memory outbox worker): the topic's listener on a daemon thread
    with an event loop of its own, setting `event` at each wake-up (and whenever it starts or
    resumes listening: something may have been missed). Nothing with the transport `off`."""
    if transport() == "off":
        return

    async def listen() -> None:
        wakeups = Wakeups(topic, on_wake=event.set)
        await wakeups.start()
        try:
            await asyncio.Event().wait()  # for the process's life
        finally:
            await wakeups.aclose()

    threading.Thread(target=asyncio.run, args=(listen(),), name=f"{topic}-wakeups", daemon=True).start()
