"""Credentials that end and guessing that is stopped, against a real core process (uvicorn, issue 8)."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest

from tests.servers import core_server, create_users, fresh_database, manage, on_database, running, server_env

# Run in the SQLite pass only: throttles (each process's own cache) and token rotation in one process: plain ORM.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

PASSWORD = "correct-horse-battery-staple"
OFFICE = 50


@dataclass
class Site:
    env: dict[str, str]
    url: str

    def login(self, email: str, password: str = PASSWORD, **headers: str) -> httpx2.Response:
        return httpx2.post(
            f"{self.url}/auth/login", json={"email": email, "password": password}, headers=headers, timeout=30
        )

    def refresh(self, token: str) -> httpx2.Response:
        return httpx2.post(f"{self.url}/auth/refresh", json={"refresh_token": token}, timeout=30)

    def shell(self, code: str) -> None:
        manage("shell", "-c", code, env=self.env)


def make_staff() -> None:
    from accounts.models import User

    User.objects.filter(email="staff@example.com").update(is_staff=True, is_superuser=True)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with fresh_database() as db_env:
        env = server_env(**db_env, LOG_LEVEL="WARNING", MEMORY_DRAIN_ON_COMMIT="0")
        emails = ["alice@example.com", "bob@example.com", "guessed@example.com", "neighbour@example.com"]
        emails += ["staff@example.com", "eve@example.com", *(f"office{n}@example.com" for n in range(OFFICE))]
        create_users(*emails, password=PASSWORD, env=env)  # in this process, one hash for all
        on_database(env, make_staff)
        with running(core_server(env=env)) as server:
            yield Site(env, server.url)


def assert_envelope(response: httpx2.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_a_password_change_by_any_path_revokes_earlier_refresh_tokens(site: Site):
    before = site.login("alice@example.com").json()
    rotated = site.refresh(before["refresh_token"]).json()  # a rotation does not launder it
    site.shell(
        "from accounts.models import User\n"
        "user = User.objects.get(email='alice@example.com')\n"
        "user.set_password('a-brand-new-passphrase-42')\n"
        "user.save()\n"
    )
    assert_envelope(site.refresh(rotated["refresh_token"]), 401, "invalid_refresh_token")
    assert site.login("alice@example.com").status_code == 401  # the old password is gone too
    after = site.login("alice@example.com", "a-brand-new-passphrase-42").json()
    assert site.refresh(after["refresh_token"]).status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(site: Site):
    first = site.login("bob@example.com").json()["refresh_token"]
    second = site.refresh(first).json()["refresh_token"]
    third = site.refresh(second).json()["refresh_token"]  # the normal path: rotation after rotation
    assert_envelope(site.refresh(first), 401, "invalid_refresh_token")  # the thief (or victim) replays
    assert_envelope(site.refresh(third), 401, "invalid_refresh_token")  # the newest one is dead too
    # Another login is another family, untouched.
    other = site.login("bob@example.com").json()["refresh_token"]
    assert site.refresh(other).status_code == 200


def test_twelve_guesses_each_claiming_another_address_are_stopped_after_five(site: Site):
    answers = [
        site.login("guessed@example.com", f"guess-{n}", **{"X-Forwarded-For": f"203.0.113.{n}"}) for n in range(12)
    ]
    assert [answer.status_code for answer in answers] == [401] * 5 + [429] * 7
    assert answers[-1].json()["error"]["code"] == "throttled"
    assert 0 < int(answers[-1].headers["Retry-After"]) <= 15 * 60
    # Even the right password waits out the window: guessing it would otherwise still pay off.
    assert site.login("guessed@example.com", **{"X-Forwarded-For": "198.51.100.7"}).status_code == 429
    # Someone else behind the same address is not locked out.
    assert site.login("neighbour@example.com").status_code == 200


def test_fifty_people_behind_one_address_log_in_and_refresh_within_a_minute(site: Site):
    started = time.monotonic()
    with httpx2.Client(base_url=site.url, timeout=30) as client:
        logins = [
            client.post("/auth/login", json={"email": f"office{n}@example.com", "password": PASSWORD})
            for n in range(OFFICE)
        ]
        assert [response.status_code for response in logins] == [200] * OFFICE
        refreshes = [
            client.post("/auth/refresh", json={"refresh_token": response.json()["refresh_token"]})
            for response in logins
        ]
        assert [response.status_code for response in refreshes] == [200] * OFFICE
        logouts = [
            client.post("/auth/logout", json={"refresh_token": response.json()["refresh_token"]})
            for response in refreshes
        ]
        assert [response.status_code for response in logouts] == [204] * OFFICE
    print(f"{OFFICE} logins, refreshes and logouts from one address in {time.monotonic() - started:.1f} s")


def test_refresh_is_limited_per_user_not_per_address(site: Site):
    token = site.login("eve@example.com").json()["refresh_token"]
    started, accepted = time.monotonic(), 0
    while (response := site.refresh(token)).status_code == 200 and accepted < 100:
        accepted += 1
        token = response.json()["refresh_token"]
    limited = response
    assert_envelope(limited, 429, "throttled")
    # REFRESH_RATE 30/min by default: a burst of 30, then one more every 2 s (GCRA refills evenly).
    assert 30 <= accepted <= 30 + (time.monotonic() - started) / 2 + 1
    assert int(limited.headers["Retry-After"]) > 0
    other = site.login("neighbour@example.com").json()["refresh_token"]
    assert site.refresh(other).status_code == 200  # same address, another user


def _admin_login(site: Site, password: str) -> httpx2.Response:
    with httpx2.Client(base_url=site.url, timeout=30) as client:
        page = client.get("/admin/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        return client.post(
            "/admin/login/?next=/admin/",
            data={
                "username": "staff@example.com",
                "password": password,
                "csrfmiddlewaretoken": csrf,
                "next": "/admin/",
            },
            headers={"X-Forwarded-For": "192.0.2.1"},
        )


def test_the_admin_login_is_limited_the_same_way(site: Site):
    assert _admin_login(site, PASSWORD).status_code == 302  # the normal path
    for _ in range(5):
        assert _admin_login(site, "wrong").status_code == 200  # the form again, with an error
    limited = _admin_login(site, PASSWORD)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert "sessionid" not in limited.cookies


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="SQLite's single write lock is what is tested")
def test_failed_logins_bad_tickets_and_bad_refresh_tokens_take_no_write_lock(site: Site):
    access = site.login("neighbour@example.com").json()["access_token"]
    path = site.env["SQLITE_PATH"]
    holder = sqlite3.connect(path, isolation_level=None, timeout=5)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock
    try:
        started = time.monotonic()
        assert site.login("neighbour@example.com", "wrong").status_code == 401
        assert site.login("nobody@example.com", "wrong").status_code == 401
        ticket = httpx2.get(f"{site.url}/output/stream", params={"ticket": "garbage-ticket"}, timeout=30)
        assert_envelope(ticket, 401, "invalid_token")
        assert_envelope(site.refresh("not.a.token"), 401, "invalid_refresh_token")
        assert_envelope(site.refresh(access), 401, "invalid_refresh_token")  # an access token is no refresh token
        # A writer would have waited for the lock (20 s) and then failed; anything well under that
        # took no lock (the bound is generous: CI shares its cores with parallel end-to-end tests).
        assert time.monotonic() - started < 15
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert site.login("neighbour@example.com").status_code == 200
