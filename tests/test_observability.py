"""What an operator sees: JSON log lines joined across processes by the request id, no secrets in
them, and Prometheus metrics behind a scrape token of their own."""

from __future__ import annotations

import json
import os
import re

import httpx2
import pytest

from tests.mcp.conftest import PASSWORD, TOKEN, running, stack, wait_until
from tests.servers import ServerProcess, core_server, create_users, running_together

METRICS_TOKEN = os.environ["CORTEX_METRICS_TOKEN"]
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}
SCRAPE_HEADER = {"HTTP_AUTHORIZATION": SCRAPE["Authorization"]}

SECRET_CONTENT = "the-launch-code-is-4242"


def json_lines(process: ServerProcess) -> list[dict]:
    lines = [line for line in process.log_path.read_text(errors="replace").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{process.name} wrote a line that is not JSON: {line!r}") from None
    return parsed


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_a_requests_id_joins_the_core_cognition_and_memory_lines_and_no_secret_is_logged():
    with stack() as system:
        system.env.update(LOG_FORMAT="json", LOG_LEVEL="INFO")
        with running_together(
            system.memory(),
            system.cognition(),
            # uvicorn without its access log (as in production): the core writes its own access lines.
            core_server(env=system.env),
            meanwhile=lambda: create_users("olga@example.com", password=PASSWORD, env=system.env),
        ) as (memory, cognition, core):
            http = httpx2.Client(base_url=core.url, timeout=10)
            login = http.post("/auth/login", json={"email": "olga@example.com", "password": PASSWORD})
            tokens = login.json()
            auth = {"Authorization": f"Bearer {tokens['access_token']}"}
            assert http.post("/input", json={"content": SECRET_CONTENT}, headers=auth).status_code == 200
            ticket = http.post("/output/ticket", headers=auth).json()["ticket"]
            with http.stream("GET", f"/output/stream?ticket={ticket}") as stream:
                assert stream.status_code == 200
            http.cookies.clear()  # the stream cookie of POST /output/ticket would authenticate it
            assert http.get(f"/output/stream?ticket={ticket}").status_code == 401  # used: logged as a refusal

            context = http.get("/context", params={"query": "launch"}, headers=auth)
            assert context.status_code == 200, context.text
            request_id = context.headers["X-Request-ID"]
            assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # unique per process and counter, no payload

            # A caller's own well-formed id is kept (a proxy's correlation id), a malformed one replaced.
            assert http.get("/healthz", headers={"X-Request-ID": "edge-1234-abcd"}).headers["X-Request-ID"] == (
                "edge-1234-abcd"
            )
            assert http.get("/healthz", headers={"X-Request-ID": "a b;c=d"}).headers["X-Request-ID"] != "a b;c=d"

            def logged_by(process: ServerProcess) -> list[dict]:
                return [line for line in json_lines(process) if line.get("request_id") == request_id]

            wait_until(lambda: logged_by(memory) and logged_by(cognition) and logged_by(core), timeout=10)
            http.close()

        [core_line] = [line for line in logged_by(core) if line["logger"] == "cortex.access"]
        assert core_line["route"] == "context" and core_line["status"] == 200 and core_line["level"] == "INFO"
        assert {"time", "message", "duration_ms", "method", "path"} <= set(core_line)
        assert logged_by(cognition)[0]["service"] == "cognition" and logged_by(memory)[0]["service"] == "memory"

        everything = "\n".join(process.log_path.read_text() for process in (core, memory, cognition))
        for secret in (PASSWORD, tokens["access_token"], tokens["refresh_token"], ticket, SECRET_CONTENT, TOKEN):
            assert secret not in everything
        for line in (core_line, logged_by(cognition)[0], logged_by(memory)[0]):
            print(json.dumps(line))  # the sample lines for the closing note (-s)


@pytest.mark.django_db
def test_metrics_are_served_only_with_the_scrape_token(api, alice, settings):
    from conftest import client_for

    assert api.get("/metrics").status_code == 404
    assert api.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token").status_code == 404
    # The service token, which every process of the group holds, is not a scrape credential.
    assert api.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404
    settings.CORTEX = {**settings.CORTEX, "METRICS_TOKEN": None}
    assert api.get("/metrics", HTTP_AUTHORIZATION="Bearer None").status_code == 404

    settings.CORTEX = {**settings.CORTEX, "METRICS_TOKEN": METRICS_TOKEN}

    def scrape() -> str:
        response = api.get("/metrics", **SCRAPE_HEADER)
        assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
        return response.content.decode()

    def login_failures(text: str) -> float:
        return float(re.search(r"^cortex_login_failures_total (\S+)", text, re.M).group(1))

    before = login_failures(scrape())
    client_for(None).post("/auth/login", {"email": "alice@example.com", "password": "wrong"}, format="json")
    text = scrape()
    assert login_failures(text) == before + 1
    for name in (
        "cortex_outbox_pending",
        "cortex_outbox_oldest_pending_age_seconds",
        "cortex_open_streams",
        "cortex_events_published_total",
        "cortex_events_delivered_total",
        "cortex_throttled_requests_total",
    ):
        assert name in text, name


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_metrics_count_requests_by_route_streams_events_and_service_calls():
    with stack() as system:
        system.env.update(TICKET_RATE="1/min")
        with running_together(
            system.memory(),
            system.cognition(),
            system.core(),
            meanwhile=lambda: create_users("mira@example.com", password=PASSWORD, env=system.env),
        ) as (_, _, core):
            http = httpx2.Client(base_url=core.url, timeout=10)
            auth = {
                "Authorization": "Bearer "
                + http.post("/auth/login", json={"email": "mira@example.com", "password": PASSWORD}).json()[
                    "access_token"
                ]
            }
            workspace = http.post("/config/workspace", json={"name": "w"}, headers=auth).json()["workspace"]
            assert http.get(f"/config/workspace/{workspace['id']}", headers=auth).status_code == 200
            assert http.get("/context", headers=auth).status_code == 200
            assert [http.post("/output/ticket", headers=auth).status_code for _ in range(2)] == [200, 429]
            assert http.get("/nowhere/at/all", headers=auth).status_code == 404
            with http.stream("GET", "/output/stream", headers=auth) as stream:
                lines = stream.iter_lines()
                next(lines)  # retry hint: the stream is open
                scrape = httpx2.get(f"{core.url}/metrics", headers=SCRAPE).text
                assert 'cortex_open_streams{transport="sse"} 1.0' in scrape
                assert http.post("/input", json={"content": "hi"}, headers=auth).status_code == 200
                assert any(line.startswith("data:") for line in lines)
            wait_until(
                lambda: (
                    'cortex_open_streams{transport="sse"} 0.0' in httpx2.get(f"{core.url}/metrics", headers=SCRAPE).text
                ),
                timeout=10,
            )
            scrape = httpx2.get(f"{core.url}/metrics", headers=SCRAPE).text
            http.close()
    expected = [
        'cortex_http_requests_total{method="GET",route="config/workspace/<str:workspace_id>",status="200"} 1.0',
        'cortex_http_requests_total{method="POST",route="input",status="200"} 1.0',
        'cortex_http_request_duration_seconds_count{method="POST",route="input",status="200"} 1.0',
        "cortex_events_published_total 1.0",
        'cortex_events_delivered_total{transport="sse"} 1.0',
        'cortex_mcp_call_duration_seconds_count{operation="get_context",service="cognition"} 1.0',
        'cortex_throttled_requests_total{route="output/ticket"} 1.0',
        'cortex_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0',
    ]
    for line in expected:
        assert line in scrape, f"{line}\n{scrape}"
    assert re.search(r"^cortex_outbox_pending \d", scrape, re.M)


def test_credentials_that_reach_a_log_message_by_accident_are_scrubbed(caplog):
    import logging

    from common.logs import RedactingFilter

    logger = logging.getLogger("tests.redaction")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="tests.redaction"):
            logger.info("GET %s failed", "/output/stream?ticket=tk-123&conversation_id=c")
            logger.info("upstream said: Authorization: Bearer eyJhbGciOi.abc.def")
            logger.info("body %s", '{"email": "a@b.c", "password": "hunter2", "refresh_token": "r-1"}')
    finally:
        logger.filters.clear()
    text = caplog.text
    assert "tk-123" not in text and "eyJhbGciOi" not in text and "hunter2" not in text and "r-1" not in text
    assert "conversation_id=c" in text and "a@b.c" in text


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_a_debug_mode_server_answers_unknown_paths_and_wrong_methods_with_the_envelope():
    """What `make run` serves (DEBUG=1): no HTML debug page outside the admin and the docs."""
    with stack() as system:
        env = {key: value for key, value in system.env.items() if key not in ("SECRET_KEY", "JWT_SIGNING_KEY")}
        with running(core_server(env={**env, "DEBUG": "1", "ALLOWED_HOSTS": "127.0.0.1"})) as core:
            missing = httpx2.get(f"{core.url}/no/such/page")
            wrong = httpx2.post(f"{core.url}/healthz")
            docs = httpx2.get(f"{core.url}/docs")
            # /docs offline: every asset the page names comes from this server.
            assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
            assert assets and all(url.startswith("/static/") for url in assets), assets
            assert [httpx2.get(f"{core.url}{url}").status_code for url in assets] == [200] * len(assets)
    assert missing.status_code == 404 and missing.json() == {"error": {"code": "not_found", "message": "Not found."}}
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert wrong.headers["Allow"] == "GET" and missing.headers["X-Request-ID"]
    assert docs.status_code == 200 and docs.headers["Content-Type"].startswith("text/html")


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_metrics_of_several_worker_processes_are_served_together(tmp_path):
    """uvicorn --workers: whichever process answers the scrape counts every process's requests."""
    import sys

    from tests.servers import free_port

    with stack() as system:
        port = free_port()
        workers = ServerProcess(
            name=f"core-workers:{port}",
            argv=[
                sys.executable,
                "-m",
                "uvicorn",
                "cortex_site.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "2",
                "--no-access-log",
                "--lifespan",
                "off",
            ],
            port=port,
            env={**system.env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        )
        with running(workers) as core:
            for _ in range(40):  # new connections: spread over both processes
                assert httpx2.get(f"{core.url}/healthz").status_code == 200
            scrapes = [httpx2.get(f"{core.url}/metrics", headers=SCRAPE).text for _ in range(4)]
    pids = {path.name for path in tmp_path.iterdir()}
    assert len({name.rsplit("_", 1)[-1] for name in pids}) >= 2, pids  # two processes wrote metrics
    for scrape in scrapes:
        assert 'cortex_http_requests_total{method="GET",route="healthz",status="200"} 40.0' in scrape, scrape
        assert "cortex_outbox_pending" in scrape
