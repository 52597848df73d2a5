"""The test authorization server (django-oauth-toolkit, `tests/oauth_server`) and the MCP expert it
protects (`tests/oauth_expert.py`), each its own process."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx2

from tests.servers import ServerProcess, free_port

RS_CLIENT_ID = "resource-server"
RS_CLIENT_SECRET = "resource-server-secret-0123456789"


def authorization_server(*, token_seconds: int = 3600) -> ServerProcess:
    port = free_port()
    database = Path(tempfile.mkdtemp(prefix="cortex-test-as-")) / "as.sqlite3"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "tests.oauth_server.settings",
        "AS_DB": str(database),
        "AS_TOKEN_SECONDS": str(token_seconds),
        "AS_RS_CLIENT_ID": RS_CLIENT_ID,
        "AS_RS_CLIENT_SECRET": RS_CLIENT_SECRET,
    }
    return ServerProcess(
        name="authorization-server",
        argv=[sys.executable, "-m", "tests.oauth_server.serve", str(port)],
        port=port,
        env=env,
    )


def oauth_expert(as_url: str) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "tests.oauth_expert", str(port), as_url, RS_CLIENT_ID, RS_CLIENT_SECRET]
    return ServerProcess(
        name="oauth-expert", argv=argv, port=port, env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    )


def stats(as_url: str, user: str = "alice") -> dict:
    answer = httpx2.get(f"{as_url}/test/stats", params={"user": user}, timeout=10)
    answer.raise_for_status()
    return answer.json()
