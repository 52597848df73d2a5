"""The delivery worker's runtime (`manage.py webhook_worker`).

Every `WEBHOOK_POLL_MS` (and when an attempt finishes, at most every `ROUND_GAP`) it leases due
webhooks (up to its free slots of `WEBHOOK_CONCURRENCY`) with up to `WEBHOOK_BATCH` of each one's
oldest pending deliveries, sends them in order as Standard Webhooks requests (the `standardwebhooks`
reference package signs them), and records the outcomes of every attempt that finished since the
last round, in the round's one write transaction with the next lease (a few statements, whatever
their number). A receiver
that hangs costs its own slot for at most `WEBHOOK_TIMEOUT_SECONDS`; nobody else waits for it.

What leaves the process is bounded like an expert call: the URL obeys the host policy
(`WEBHOOK_ALLOWED_HOSTS`) when registered and again at the socket on every connection
(`hosts.CheckedBackend`: the address checked is the address connected), redirects are never
followed (a 3xx is a failed attempt), and at most 64 KiB of an answer is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime

import httpx2
from asgiref.sync import sync_to_async
from django.conf import settings
from standardwebhooks import Webhook as Signer

from mcp_services.experts import hosts
from webhooks import policy, services
from webhooks.services import Attempt, Claimed

logger = logging.getLogger(__name__)

ANSWER_LIMIT = 64 * 1024
SETTING = "WEBHOOK_ALLOWED_HOSTS"
USER_AGENT = "Cortex-Webhooks/1"

db = sync_to_async  # thread-sensitive: every query of the worker on one thread


def signed_headers(claimed: Claimed, now: datetime) -> dict[str, str]:
    """`webhook-id` (the event's id in its owner's log), `webhook-timestamp`, `webhook-signature`."""
    msg_id = str(claimed.event_seq)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Signer(claimed.secret).sign(msg_id=msg_id, timestamp=now, data=claimed.payload.encode()),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


async def attempt(client: httpx2.AsyncClient, claimed: Claimed) -> Attempt:
    """One POST: its status, or why there was none. Never raises."""

    def outcome(status: int | None, error: str = "") -> Attempt:
        return Attempt(delivery_id=claimed.delivery_id, webhook_id=claimed.webhook_id, status_code=status, error=error)

    try:
        hosts_refusal = policy.url_refusal(claimed.url)
        if hosts_refusal is not None:  # the allow-list changed since registration
            return outcome(None, hosts_refusal)
        headers = signed_headers(claimed, datetime.now(UTC))
        async with asyncio.timeout(settings.WEBHOOK_TIMEOUT_SECONDS):
            async with client.stream(
                "POST", claimed.url, content=claimed.payload.encode(), headers=headers
            ) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= ANSWER_LIMIT:
                        break  # the rest is not read: the connection is dropped
                status = response.status_code
        if 300 <= status < 400:
            return outcome(status, f"HTTP {status}: redirects are not followed")
        return outcome(status, "" if 200 <= status < 300 else f"HTTP {status}")
    except TimeoutError:
        return outcome(None, f"timeout: no answer within {settings.WEBHOOK_TIMEOUT_SECONDS}s")
    except httpx2.HTTPError as exc:
        return outcome(None, f"{type(exc).__name__}: {exc}"[:500])
    except Exception as exc:  # noqa: BLE001 - one receiver's oddity never stops the worker
        logger.exception("webhook delivery %s failed", claimed.delivery_id)
        return outcome(None, f"{type(exc).__name__}: {exc}"[:500])


def client_new() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=hosts.checked_transport(SETTING),
        follow_redirects=False,
        timeout=httpx2.Timeout(settings.WEBHOOK_TIMEOUT_SECONDS),
        headers={"accept-encoding": "identity"},
        limits=httpx2.Limits(max_connections=settings.WEBHOOK_CONCURRENCY, max_keepalive_connections=64),
    )


class DeliveryWorker:
    # Rounds (a record and a claim: two write transactions) at most this often when attempts keep
    # finishing: under load the outcomes of many attempts share one transaction, and SQLite's one
    # write lock is left to the inputs' group commit most of the time.
    ROUND_GAP = 0.1

    def __init__(self, *, owner: str | None = None) -> None:
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tasks: set[asyncio.Task] = set()
        self.done: list[Attempt] = []
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        poll = settings.WEBHOOK_POLL_MS / 1000
        client = client_new()
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    await self._round(client)
                except Exception:
                    logger.exception("webhook worker round failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._sleep(stop), timeout=poll)
                gap = self.ROUND_GAP - (time.monotonic() - began)
                if gap > 0 and not stop.is_set():
                    await asyncio.sleep(gap)
            # SIGTERM: the requests in flight finish (at most the timeout) and are recorded.
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            await self._record()
        finally:
            await client.aclose()

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Until stopped, or an attempt finished (its webhook may have more to send at once)."""
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self.wake.clear()

    async def _record(self) -> None:
        if self.done:
            batch, self.done = self.done, []
            await db(services.attempts_record)(owner=self.owner, attempts=batch)

    async def _round(self, client: httpx2.AsyncClient) -> None:
        """Record what finished and lease what is due, in one write transaction (a read first, when
        there is nothing to record: most polls of an idle worker write nothing)."""
        free = settings.WEBHOOK_CONCURRENCY - len(self.tasks)
        if not self.done and (free <= 0 or not await db(services.webhooks_due_exist)()):
            return
        done, self.done = self.done, []
        claimed = await db(services.worker_round)(
            owner=self.owner, attempts=done, limit=max(free, 0), batch=settings.WEBHOOK_BATCH
        )
        batches: dict[uuid.UUID, list[Claimed]] = {}
        for one in claimed:  # in log order within each webhook
            batches.setdefault(one.webhook_id, []).append(one)
        for webhook_id, batch in batches.items():
            task = asyncio.create_task(self._send(client, batch), name=f"webhook-{webhook_id}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send(self, client: httpx2.AsyncClient, batch: list[Claimed]) -> None:
        """One webhook's leased deliveries, one after another at its rate limit; the first failure
        ends the batch (the rest wait behind its backoff, in order), and none starts after the
        timeout (the lease covers the batch: `services.lease_duration`)."""
        started = time.monotonic()
        spacing = 1 / settings.WEBHOOK_MAX_PER_SECOND
        results: list[Attempt] = []
        try:
            for n, claimed in enumerate(batch):
                if n and time.monotonic() - started >= settings.WEBHOOK_TIMEOUT_SECONDS:
                    break
                if n:
                    await asyncio.sleep(max(0.0, started + n * spacing - time.monotonic()))
                began = time.monotonic()
                result = await attempt(client, claimed)
                logger.debug(
                    "webhook %s event %s: %s in %.0f ms",
                    claimed.webhook_id,
                    claimed.event_seq,
                    result.status_code or result.error,
                    (time.monotonic() - began) * 1000,
                )
                results.append(result)
                if not result.delivered:
                    break
        finally:
            self.done.extend(results)
            self.wake.set()
