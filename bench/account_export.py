"""`GET /account/export` of a small and a large account against a real core (uvicorn) and memory
service on 127.0.0.1: bytes, time, and how much each process's peak RSS grew during the download.

`.venv/bin/python -m bench.account_export` (SQLite), `scripts/with_postgres.sh .venv/bin/python -m
bench.account_export` (PostgreSQL). `BENCH_EXPORT_ITEMS` (100,000) memory items and
`BENCH_EXPORT_MESSAGES` (10,000) messages for the large account; the small one has 1% of each.
The peak (VmHWM) is reset before each download (`/proc/<pid>/clear_refs`), so the growth is the
download's own.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench.mcp import service_pair
from tests.servers import core_server, fresh_database, running

ITEMS = int(os.environ.get("BENCH_EXPORT_ITEMS", 100_000))
MESSAGES = int(os.environ.get("BENCH_EXPORT_MESSAGES", 10_000))
PASSWORD = "correct-horse-battery-staple"


def load_account(email: str, *, items: int, messages: int) -> None:
    """A user with `messages` messages in a conversation of theirs and `items` memory items (as the
    outbox stores them, without vectors: the export reads none), bulk-inserted through the ORM."""
    from accounts.models import User
    from mcp_services.models import MemoryItem
    from workspaces.models import Conversation, Message, Workspace

    user = User.objects.create_user(email=email, password=PASSWORD, name=email.split("@")[0])
    workspace = Workspace.objects.create(owner=user, name="home")
    conversation = Conversation.objects.create(workspace=workspace, topic="everything")
    conversation.participants.add(user)
    start = datetime.now(UTC) - timedelta(days=400)
    for offset in range(0, messages, 5000):
        Message.objects.bulk_create(
            Message(
                conversation=conversation,
                sender=user,
                content=f"Message {n}: the plumber comes on Tuesday to look at the boiler pressure valve again.",
                created_at=start + timedelta(seconds=n),
            )
            for n in range(offset, min(offset + 5000, messages))
        )
    for offset in range(0, items, 5000):
        rows = []
        for n in range(offset, min(offset + 5000, items)):
            moment = start + timedelta(minutes=n)
            content = f"Note {n}: remember to water the tomatoes and ask Ruben about the wedding seating plan."
            data = {
                "id": str(uuid.uuid4()),
                "content": content,
                "conversation_id": str(conversation.id),
                "timestamp": moment.isoformat(),
                "metadata": {},
            }
            rows.append(
                MemoryItem(
                    user_id=user.id,
                    item_id=data["id"],
                    conversation_id=data["conversation_id"],
                    content=content,
                    data=data,
                    timestamp=moment,
                )
            )
        MemoryItem.objects.bulk_create(rows)


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def export(base_url: str, email: str, pids: dict[str, int]) -> None:
    token = httpx2.post(f"{base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=30).json()[
        "access_token"
    ]
    for pid in pids.values():
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS
    before = {name: status_mb(pid, "VmHWM") for name, pid in pids.items()}
    size = lines = 0
    started = time.perf_counter()
    first_byte = None
    headers = {"Authorization": f"Bearer {token}"}
    save = os.environ.get("BENCH_EXPORT_SAVE")  # a file to write the small account's download to
    out = open(save, "wb") if save and email.startswith("small") else None  # noqa: SIM115 - closed below
    with httpx2.stream("GET", f"{base_url}/account/export", headers=headers, timeout=600) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_bytes():
            if out is not None:
                out.write(chunk)
            if first_byte is None:
                first_byte = time.perf_counter() - started
            size += len(chunk)
            lines += chunk.count(b"\n")
    took = time.perf_counter() - started
    if out is not None:
        out.close()
    growth = ", ".join(
        f"{name} RSS {before[name]:.0f} MB, peak +{status_mb(pid, 'VmHWM') - before[name]:.1f} MB"
        for name, pid in pids.items()
    )
    print(
        f"{email}: {size / 1e6:,.1f} MB, {lines:,} lines in {took:.1f} s "
        f"(first byte after {1000 * (first_byte or 0):.0f} ms); {growth}"
    )


def main() -> int:
    database_kind = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    print(f"database: {database_kind}; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with fresh_database() as database:
        os.environ.update(database)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
        import django

        django.setup()
        from django.db import connections

        small_items, small_messages = max(1, ITEMS // 100), max(1, MESSAGES // 100)
        load_account("small@example.com", items=small_items, messages=small_messages)
        started = time.perf_counter()
        load_account("large@example.com", items=ITEMS, messages=MESSAGES)
        connections.close_all()
        print(f"loaded {ITEMS:,} memory items and {MESSAGES:,} messages in {time.perf_counter() - started:.1f} s")
        env, memory, _cognition = service_pair(database, EXPORT_RATE="1000/hour", MEMORY_EMBEDDER="off")
        with running(memory, timeout=60), running(core_server(env=env, server="uvicorn")) as core:
            assert core.process is not None and memory.process is not None
            pids = {"core": core.process.pid, "memory": memory.process.pid}
            print(f"small account: {small_items:,} memory items, {small_messages:,} messages")
            export(core.url, "small@example.com", pids)  # also the warm-up
            export(core.url, "small@example.com", pids)
            print(f"large account: {ITEMS:,} memory items, {MESSAGES:,} messages")
            export(core.url, "large@example.com", pids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
