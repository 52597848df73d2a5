"""Schedules and webhooks (issue 27): the schedule claim with many schedules, and webhook delivery
under load, against real processes on 127.0.0.1 in production mode.

    .venv/bin/python -m bench.schedules_webhooks --claims          # 10 and 10,000 schedules
    .venv/bin/python -m bench.schedules_webhooks --deliveries      # 1,000 webhooks x 10 events
    scripts/with_postgres.sh .venv/bin/python -m bench.schedules_webhooks --claims

--claims (in a child process on a fresh database, the real services): N schedules not due and 10
due ones; `schedules_due_exist()` (the turn worker's poll) and `schedules_run_due()` (the claim,
which writes the 10 inputs; rolled back each round so every round sees the same state).

--deliveries: a core (uvicorn) and one `manage.py webhook_worker`; USERS (100) people with
EACH (10) webhooks each (1,000 in all, every input) pointing at a receiver on loopback; each
person posts 10 inputs (the users are made and their tokens minted in one `manage.py shell`). Reported: the delay from each input's 200 (its commit) to its arrival at
each webhook, p50/p99/max, and the time until all 10,000 deliveries arrived. Then POST /input
throughput and latency (C clients, closed loops) without webhooks, and with the 1,000 delivering.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench.hotpath import RawHTTP, post_input
from bench.streaming import cpu_seconds
from tests.servers import core_server, fresh_database, manage, manage_command, running, server_env

PASSWORD = "bench-password-0123456789"
DUE = 10


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(call: Any, rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append(1000 * (time.perf_counter() - started))
    return {"p50_ms": round(statistics.median(samples), 2), "p99_ms": round(_percentile(samples, 0.99), 2)}


def claims_one(count: int, rounds: int) -> dict[str, Any]:
    import django

    django.setup()
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    from accounts.models import User
    from schedules import services
    from schedules.models import Schedule
    from workspaces.services import conversation_create, workspace_create

    owner = User.objects.create_user(email="owner@example.com", password=PASSWORD)
    conversation = conversation_create(workspace=workspace_create(owner=owner, name="w"), creator=owner, topic="t")
    now = timezone.now()
    rows = [
        Schedule(
            owner=owner,
            conversation=conversation,
            content="later",
            cron="0 8 * * *",
            timezone="Europe/Berlin",
            next_run_at=now + timedelta(minutes=1 + n % 1440),
        )
        for n in range(count)
    ]
    rows += [
        Schedule(
            owner=owner,
            conversation=conversation,
            content="now",
            cron="0 8 * * *",
            timezone="UTC",
            next_run_at=now - timedelta(seconds=1),
        )
        for _ in range(DUE)
    ]
    Schedule.objects.bulk_create(rows, batch_size=1000)

    def claim() -> None:
        with transaction.atomic():
            services.schedules_run_due()
            transaction.set_rollback(True)

    return {
        "schedules": count + DUE,
        "poll": _timed(services.schedules_due_exist, rounds),
        "claim_10_due": _timed(claim, rounds),
    }


def append_cost_one(rounds: int, batch: int) -> dict[str, Any]:
    """CPU per input (the `messages_create` batch of POST /input, in-process) with the webhooks'
    receiver connected and disconnected, interleaved; nobody has a webhook, then one person of
    the batch has one (its deliveries written)."""
    import django

    django.setup()
    from django.contrib.auth.hashers import make_password

    from accounts.models import User
    from streaming.models import Event
    from streaming.signals import events_appended
    from webhooks import receivers
    from webhooks.services import webhook_create
    from workspaces.services import InputRequest, messages_create

    hashed = make_password("unused")
    users = [User.objects.create_user(email=f"a{n}@example.com", password=None) for n in range(batch)]
    User.objects.filter(pk__in=[u.pk for u in users]).update(password=hashed)

    def one_round() -> float:
        started = time.process_time()
        for _ in range(rounds):
            messages_create(requests=[InputRequest(sender=user, content="hello") for user in users])
        return 1e6 * (time.process_time() - started) / (rounds * batch)

    def connected(on: bool) -> None:
        if on:
            events_appended.connect(receivers.create_deliveries, dispatch_uid="webhooks.deliveries_create")
        else:
            events_appended.disconnect(dispatch_uid="webhooks.deliveries_create", sender=None)
            assert not events_appended.has_listeners(Event)

    result: dict[str, Any] = {"inputs_per_batch": batch}
    for label, make_hook in (("no_webhooks", False), ("one_user_with_a_webhook", True)):
        if make_hook:
            webhook_create(owner=users[0], url="https://example.com/hook", events=["input"])
        samples: dict[str, list[float]] = {"receiver": [], "no_receiver": []}
        one_round()  # warm up
        for _ in range(5):
            for on in (True, False):
                connected(on)
                samples["receiver" if on else "no_receiver"].append(one_round())
        connected(True)
        result[label] = {key: round(statistics.median(values), 1) for key, values in samples.items()}
        result[label]["unit"] = "CPU microseconds per input (median of 5)"
    return result


def append_cost(rounds: int, batch: int) -> dict[str, Any]:
    with fresh_database() as db_env:
        argv = [
            sys.executable,
            "-m",
            "bench.schedules_webhooks",
            "--append-cost-one",
            str(batch),
            "--rounds",
            str(rounds),
        ]
        done = subprocess.run(
            argv, env=server_env(**db_env, LOG_LEVEL="WARNING"), capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)
        return json.loads(done.stdout.strip().splitlines()[-1])


def claims(sizes: list[int], rounds: int) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        with fresh_database() as db_env:
            argv = [
                sys.executable,
                "-m",
                "bench.schedules_webhooks",
                "--claims-one",
                str(size),
                "--rounds",
                str(rounds),
            ]
            done = subprocess.run(
                argv, env=server_env(**db_env, LOG_LEVEL="WARNING"), capture_output=True, text=True, timeout=1800
            )
            if done.returncode != 0:
                raise RuntimeError(done.stdout + done.stderr)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    return results


async def _input_load(
    port: int, tokens: list[str], clients: int, seconds: float, posted: dict[str, float] | None = None
) -> dict[str, Any]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    ok = 0

    async def client(n: int) -> None:
        nonlocal ok
        connection, token, i = RawHTTP(port), tokens[n % len(tokens)], 0
        try:
            while time.monotonic() < stop:
                started = time.perf_counter()
                status, body = await post_input(connection, token, {"content": f"load {n} {i}"})
                latencies.append(time.perf_counter() - started)
                ok += 200 <= status < 300
                if posted is not None and 200 <= status < 300:
                    posted[json.loads(body)["data"]["id"]] = time.time()
                i += 1
        finally:
            connection.close()

    began = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.monotonic() - began
    return {
        "rps": round(ok / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
        "requests": len(latencies),
        "accepted": ok,
    }


def _measured(load: Any, pids: dict[str, int]) -> dict[str, Any]:
    """Run `load()`, with the CPU seconds each process used meanwhile (the bench's own process is
    the load generator and, when delivering, the receiver's threads)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own = time.process_time()
    result = load()
    cpu = {name: round(cpu_seconds(pid) - before[name], 2) for name, pid in pids.items()}
    cpu["bench_process"] = round(time.process_time() - own, 2)
    result["cpu_s"] = cpu
    result["core_cpu_ms_per_input"] = round(1000 * cpu["core"] / max(result["accepted"], 1), 3)
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
    return result


def _delays(receiver: Any, posted: dict[str, float]) -> tuple[dict[str, float], int, int]:
    delays, seen = [], set()
    for hit in list(receiver.hits):
        key = (hit.path, hit.headers["webhook-id"])
        if key in seen:
            continue
        seen.add(key)
        input_id = json.loads(hit.body)["data"]["id"]
        if input_id in posted:
            delays.append(hit.wall - posted[input_id])
    summary = {
        "p50": round(statistics.median(delays), 3),
        "p99": round(_percentile(delays, 0.99), 3),
        "max": round(max(delays), 3),
    }
    return summary, len(delays), len(receiver.hits) - len(seen)


def deliveries(users: int, each: int, events: int, clients: int, seconds: float) -> dict[str, Any]:
    import httpx2

    from tests.webhooks.receiver import Receiver

    receiver = Receiver(keep_alive=True).start()
    emails = [f"hooks{n}@example.com" for n in range(users)]
    env_extra = {
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "0",
        "INPUT_RATE": "100000000/min",
        "LOGIN_RATE": "100000000/min",
        "WEBHOOKS_RATE": "100000000/min",
        "WEBHOOKS_PER_USER": str(each),
        "WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port}",
        "WEBHOOK_POLL_MS": "50",
    }
    result: dict[str, Any] = {"webhooks": users * each, "events_each": events}
    try:
        with fresh_database() as db_env:
            env = server_env(**db_env, **env_extra)
            tokens = _users_with_tokens(emails, env)
            core = core_server(env=env)
            with running(core):
                pids = {"core": core.process.pid}
                result["input_without_webhooks"] = _measured(
                    lambda: asyncio.run(_input_load(core.port, tokens, clients, seconds)), pids
                )
                print(json.dumps({"input_without_webhooks": result["input_without_webhooks"]}), flush=True)
                worker = manage_command("webhook_worker", env=env, port=0, ready_line="webhook worker: running")
                with running(worker):
                    pids["worker"] = worker.process.pid
                    for n, token in enumerate(tokens):
                        for k in range(each):
                            response = httpx2.post(
                                f"{core.url}/webhooks",
                                json={"url": f"{receiver.url}/u{n}/w{k}", "events": ["input"]},
                                headers={"Authorization": f"Bearer {token}"},
                                timeout=30,
                            )
                            assert response.status_code == 201, response.text
                    posted: dict[str, float] = {}
                    began = time.time()
                    for _round in range(events):
                        for token in tokens:
                            response = httpx2.post(
                                f"{core.url}/input",
                                json={"content": "hello"},
                                headers={"Authorization": f"Bearer {token}"},
                                timeout=30,
                            )
                            posted[response.json()["data"]["id"]] = time.time()
                    expected = users * each * events
                    receiver.wait_for(lambda: len(receiver.hits) >= expected, timeout=600, what="every delivery")
                    result["delivery_delay_s"], _, result["duplicates"] = _delays(receiver, posted)
                    result["all_delivered_after_s"] = round(max(h.wall for h in receiver.hits) - began, 2)
                    # The same load again, each input now EACH deliveries more (and the worker delivering them).
                    load_posted: dict[str, float] = {}
                    result["input_with_webhooks"] = _measured(
                        lambda: asyncio.run(_input_load(core.port, tokens, clients, seconds, load_posted)), pids
                    )
                    print(json.dumps({"input_with_webhooks": result["input_with_webhooks"]}), flush=True)
                    wanted = each * len(load_posted)
                    receiver.wait_for(
                        lambda: len({(h.path, h.headers["webhook-id"]) for h in receiver.hits}) >= expected + wanted,
                        timeout=300,
                        what="every delivery of the load",
                    )
                    delays, count, duplicates = _delays(receiver, load_posted)
                    result["delivery_delay_under_load_s"] = {**delays, "deliveries": count, "duplicates": duplicates}
                    # Nobody's webhooks active (and counted) any more: the first load again, on the
                    # grown tables, in the same sitting.
                    manage(
                        "shell",
                        "-c",
                        "from webhooks.models import Webhook\nfrom streaming.models import EventCursor\n"
                        "Webhook.objects.update(active=False)\n"
                        "if any(f.name == 'subscriptions' for f in EventCursor._meta.fields):\n"  # (not before it)
                        "    EventCursor.objects.update(subscriptions=0)\n",
                        env=env,
                    )
                    result["input_without_webhooks_again"] = _measured(
                        lambda: asyncio.run(_input_load(core.port, tokens, clients, seconds)), pids
                    )
    finally:
        receiver.stop()
    return result


def schedule_delays(count: int, wakeups: str) -> dict[str, Any]:
    """Due time -> the schedule's input, one schedule after another: its `next_run_at` set ~1.5 s
    ahead in the database, then a change through the API (which wakes the workers, unless
    TURN_WAKEUPS=off: polling every SCHEDULE_POLL_MS, the behaviour before), then the input's time
    (the claim's, `last_run_at`) read back. Two turn workers, SCHEDULE_POLL_MS at its default."""
    from datetime import UTC, datetime, timedelta

    import httpx2

    from tests.schedules.test_schedules_e2e import _make_due
    from tests.servers import create_users
    from tests.streaming.clients import login

    result: dict[str, Any] = {"schedules": count, "TURN_WAKEUPS": wakeups}
    with fresh_database() as db_env:
        env = server_env(**db_env, LOG_LEVEL="WARNING", ACCESS_LOG="0", TURN_WAKEUPS=wakeups)
        create_users("owner@example.com", password=PASSWORD, env=env)
        core = core_server(env=env)
        with running(core):
            worker_env = {**env, "CORTEX_CORE_URL": core.url}
            first = manage_command("turn_worker", env=worker_env, port=0, ready_line="turn worker: running")
            second = manage_command("turn_worker", env=worker_env, port=0, ready_line="turn worker: running")
            with running(first), running(second):
                auth = {"Authorization": f"Bearer {login(core.url, 'owner@example.com', PASSWORD)}"}
                workspace = httpx2.post(f"{core.url}/config/workspace", json={"name": "W"}, headers=auth)
                conversation = httpx2.post(
                    f"{core.url}/config/conversation",
                    json={"workspace_id": workspace.json()["workspace"]["id"], "topic": "t", "responder": "echo"},
                    headers=auth,
                ).json()["conversation"]
                delays = []
                for n in range(count):
                    schedule = httpx2.post(
                        f"{core.url}/schedules",
                        json={
                            "conversation_id": conversation["id"],
                            "content": f"run {n}",
                            "cron": "0 8 * * *",
                            "timezone": "UTC",
                        },
                        headers=auth,
                    ).json()["schedule"]
                    due = datetime.now(UTC) + timedelta(seconds=1.5)
                    _make_due(db_env, schedule["id"], due)
                    httpx2.patch(f"{core.url}/schedules/{schedule['id']}", json={"content": f"due {n}"}, headers=auth)
                    deadline = time.monotonic() + 30
                    while True:
                        got = httpx2.get(f"{core.url}/schedules/{schedule['id']}", headers=auth).json()["schedule"]
                        if got["last_run_at"]:
                            break
                        assert time.monotonic() < deadline, "the schedule did not run"
                        time.sleep(0.1)
                    ran_at = datetime.fromisoformat(got["last_run_at"].replace("Z", "+00:00"))
                    delays.append(1000 * (ran_at - due).total_seconds())
                    httpx2.delete(f"{core.url}/schedules/{schedule['id']}", headers=auth)
    result["due_to_input_ms"] = {
        "p50": round(statistics.median(delays), 1),
        "p99": round(_percentile(delays, 0.99), 1),
        "max": round(max(delays), 1),
    }
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
    return result


def _users_with_tokens(emails: list[str], env: dict[str, str]) -> list[str]:
    """Many users at once: one password hash for all (PBKDF2 per user would take minutes), and an
    access token minted for each (no login per user)."""
    code = (
        "import json\n"
        "from django.contrib.auth.hashers import make_password\n"
        "from accounts.models import User\n"
        "from accounts.services import token_pair_issue\n"
        "hashed = make_password('unused-bench-password')\n"
        f"users = User.objects.bulk_create([User(email=e, name=e, password=hashed) for e in {emails!r}])\n"
        "print(json.dumps([token_pair_issue(user=u)['access_token'] for u in users]))\n"
    )
    return json.loads(manage("shell", "-c", code, env={**env, "ACCESS_TOKEN_MINUTES": "120"}).strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.schedules_webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", action="store_true")
    parser.add_argument("--claims-one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10,10000")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--deliveries", action="store_true")
    parser.add_argument("--schedule-delay", action="store_true", help="due time -> input, wake-ups against polling")
    parser.add_argument("--count", type=int, default=10, help="schedules run one after another (--schedule-delay)")
    parser.add_argument("--append-cost", action="store_true", help="CPU per input with and without the receiver")
    parser.add_argument("--append-cost-one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8, help="inputs per messages_create batch (--append-cost)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--each", type=int, default=10)
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--out", type=Path, default=Path("var/bench/schedules_webhooks.json"))
    args = parser.parse_args(argv)
    if args.claims_one is not None:
        print(json.dumps(claims_one(args.claims_one, args.rounds)))
        return 0
    if args.append_cost_one is not None:
        print(json.dumps(append_cost_one(args.rounds, args.append_cost_one)))
        return 0
    result: dict[str, Any] = {}
    if args.schedule_delay:
        result["schedule_delay"] = [schedule_delays(args.count, mode) for mode in ("off", "auto")]
        for row in result["schedule_delay"]:
            print(json.dumps(row), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        return 0
    if args.append_cost:
        result["append_cost"] = append_cost(args.rounds, args.batch)
        print(json.dumps(result["append_cost"]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        return 0
    if args.claims or not args.deliveries:
        result["claims"] = claims([int(size) for size in args.sizes.split(",")], args.rounds)
    if args.deliveries or not args.claims:
        result["deliveries"] = deliveries(args.users, args.each, args.events, args.clients, args.seconds)
        print(json.dumps(result["deliveries"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
