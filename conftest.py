"""Named actors for every permission test: alice owns, bob participates, charlie is an outsider."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

import pytest
from rest_framework.test import APIClient

from accounts.services import token_pair_issue
from tests.factories import ConversationFactory, UserFactory, WorkspaceFactory

# The processes the tests start hash passwords fast too (tests/process_settings.py; the benchmarks,
# which share tests/servers.py, keep the real settings).
os.environ.setdefault("CORTEX_PROCESS_SETTINGS", "tests.process_settings")


@pytest.fixture
def alice(db):
    return UserFactory(email="alice@example.com", name="Alice")


@pytest.fixture
def bob(db):
    return UserFactory(email="bob@example.com", name="Bob")


@pytest.fixture
def charlie(db):
    return UserFactory(email="charlie@example.com", name="Charlie")


@pytest.fixture
def workspace(alice):
    return WorkspaceFactory(owner=alice, name="Alice's workspace")


@pytest.fixture
def conversation(workspace, bob):
    """Owned (through the workspace) by alice, with bob as a participant."""
    return ConversationFactory(workspace=workspace, topic="Planning", participants=[bob])


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_pair_issue(user=user)['access_token']}")
    return client


@pytest.fixture
def api():
    """An anonymous client; `client_for(user)` gives an authenticated one."""
    return APIClient()


@pytest.fixture(scope="session", autouse=True)
def _users_created_in_process(django_db_blocker):
    # End-to-end stacks get their users from this process (tests.servers.create_users writes them
    # into the stack's database) instead of a `manage.py shell` run, a Django start-up each.
    from tests import servers

    servers.database_access = django_db_blocker.unblock
    yield
    servers.database_access = None


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Production's PBKDF2 costs half a second of CPU a hash: the tests (and their processes,
    # tests/process_settings.py) use a fast hasher; the benchmarks run the real one.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _inputs_on_the_test_connection(settings):
    # The input writer thread has its own connection, which cannot see (and would wait for the
    # write lock of) a test's transaction: in-process tests write inputs on their own thread.
    # End-to-end servers and `tests/workspaces/test_writer.py` use the writer thread.
    settings.CORTEX = {**settings.CORTEX, "INPUT_GROUP_COMMIT": False}


@pytest.fixture(autouse=True)
def _audit_on_the_test_connection(settings):
    # As inputs: the audit's writer thread could not see a test's transaction. In-process tests
    # record refused attempts at once; end-to-end servers use the writer thread.
    settings.CORTEX = {**settings.CORTEX, "AUDIT_WRITE_BEHIND": False}


@pytest.fixture(autouse=True)
def _fresh_throttles():
    from django.core.cache import cache

    from accounts.authentication import user_cache
    from common.web.throttles import process_rates

    cache.clear()
    process_rates.clear()
    user_cache.clear()
    yield


# --- the e2e marker is kept honest ------------------------------------------------------------
# `make check` runs `-m "not e2e"`: every test that starts no process. A test that starts one
# (a server, a `manage.py` command, an interpreter) without the marker fails here, so the fast
# loop never waits on a process and the marker never goes stale.


@contextlib.contextmanager
def _no_processes(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("e2e"):
        yield
        return
    original = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        raise AssertionError(f"{item.nodeid} starts a process ({args!r}) without @pytest.mark.e2e")

    subprocess.Popen.__init__ = refuse  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]


# `CORTEX_TEST_PROCESS_LOG=<file>`: every process the tests start is logged there, one line each
# (`<test id>\t<argv>`), to count what a run starts (each Django process costs seconds of CPU).
_PROCESS_LOG = os.environ.get("CORTEX_TEST_PROCESS_LOG")
if _PROCESS_LOG:
    _popen_init = subprocess.Popen.__init__

    def _logged(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        argv = [str(part) for part in args] if isinstance(args, list | tuple) else [str(args)]
        test = os.environ.get("PYTEST_CURRENT_TEST", "(collection)")
        with open(_PROCESS_LOG, "a") as log:
            log.write(f"{test}\t{' '.join(argv[:6])!r}\n")
        _popen_init(self, args, *rest, **kwargs)  # type: ignore[arg-type]

    subprocess.Popen.__init__ = _logged  # type: ignore[method-assign,assignment]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> object:
    with _no_processes(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    with _no_processes(item):
        return (yield)


# --- pytest-xdist (`make test` and `make check` run `-n 3 --dist loadfile --no-loadscope-reorder`) ---
# Each file's tests run on one worker, so a module's started stack starts once. (loadgroup would
# split files further, but pytest-xdist 3.8 cannot group under pytest 9: its `item._nodeid` suffix
# no longer reaches the node id.)


@pytest.hookimpl(tryfirst=True)  # before xdist sends the worker's collection, after every reordering
def pytest_collection_finish(session: pytest.Session) -> None:
    """In an xdist worker, the files with end-to-end tests are handed out first: those tests wait
    on processes, and a long one started last would keep its worker busy after the others are done."""
    if hasattr(session.config, "workerinput"):
        session.items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
