"""The schema tells the truth: schemathesis, against a real core (and its services), finds no status,
content type or body the schema does not document, and no server error."""

from __future__ import annotations

import subprocess
import sys

import httpx2
import pytest

from tests.mcp.conftest import PASSWORD, stack
from tests.servers import create_users, running_together

pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_schemathesis_finds_nothing_against_a_real_server(tmp_path):
    with stack() as system:
        # Throttles stay on (429 is documented) but high enough that the operations themselves get exercised.
        system.env.update(LOGIN_RATE="100000/min", TICKET_RATE="100000/min")
        with running_together(
            system.memory(),
            system.cognition(),
            system.core(),
            meanwhile=lambda: create_users("fuzz@example.com", password=PASSWORD, env=system.env),
        ) as (_, _, core):
            login = httpx2.post(f"{core.url}/auth/login", json={"email": "fuzz@example.com", "password": PASSWORD})
            token = login.json()["access_token"]
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "schemathesis.cli",
                    "run",
                    f"{core.url}/openapi.json",
                    "--checks",
                    CHECKS,
                    "--header",
                    f"Authorization: Bearer {token}",
                    # The streams never end by themselves (and WebSocket is not HTTP): tested in tests/streaming.
                    "--exclude-path",
                    "/output/stream",
                    "--exclude-path",
                    "/output/ws",
                    "--max-examples",
                    "5",
                    "--seed",
                    "1",
                    "--workers",
                    "1",
                    "--request-timeout",
                    "10",
                    "--output-sanitize",
                    "true",
                ],
                # In a scratch directory: schemathesis keeps a cache of past failures where it runs.
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, f"{result.stdout[-12000:]}\n{result.stderr[-2000:]}"
    summary = result.stdout[result.stdout.rfind("SUMMARY") :]
    print(summary)  # shown with -s: the numbers for the closing note
    assert "passed" in summary and "Tested: 60" in summary, summary
