"""The embedders: the bundled model loads with no network at all, and an OpenAI-compatible
endpoint (a fake one on loopback: the world outside the project) is called as configured."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from mcp_services.memory.embedding import EndpointEmbedder
from tests.servers import ROOT, server_env

# Run in a fresh interpreter: any connection to a non-loopback address, or a name lookup of one,
# raises before a byte leaves, so an attempted download fails the load instead of hanging on a
# machine with no route to any model hub.
OFFLINE_LOAD = textwrap.dedent(
    """
    import ipaddress, logging, socket

    def loopback(host):
        if host in ("localhost", None):
            return True
        try:
            return ipaddress.ip_address(str(host).strip("[]")).is_loopback
        except ValueError:
            return False

    attempts = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if isinstance(address, tuple) and not loopback(host):
            attempts.append(address)
            raise OSError(f"network access attempted: {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not loopback(host):
            attempts.append(host)
            raise OSError(f"name lookup attempted: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo

    import django
    django.setup()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    from mcp_services.memory.embedding import WordLlamaEmbedder
    embedder = WordLlamaEmbedder()
    assert (list(root.handlers), root.level) == before, "importing wordllama changed the root logger"
    penguins, birds, hosts = embedder.embed(
        ["The quarterly budget for the penguin enclosure is approved", "money granted to bird habitat", "web-07 ran out of disk"]
    )
    assert not attempts, attempts
    print(json.dumps({"name": embedder.name, "dim": embedder.dim, "close": float(penguins @ birds), "far": float(penguins @ hosts)}))
    """
).replace("import ipaddress", "import json, ipaddress")


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_bundled_model_loads_and_embeds_without_any_network(tmp_path):
    env = server_env(
        HOME=str(tmp_path),  # no ~/.cache/wordllama from an earlier download
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["name"] == "wordllama/l2_supercat-256"
    assert answer["dim"] == 256
    assert answer["close"] > answer["far"]  # the paraphrase is nearer than the unrelated note


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_the_offline_guard_catches_a_download(tmp_path):
    """The guard above is what makes the offline test meaningful: a load that downloads (no
    package directory as cache, downloads allowed, an empty cache) fails under it."""
    script = OFFLINE_LOAD.split("import django")[0] + textwrap.dedent(
        """
        import requests
        try:
            requests.get("https://huggingface.co/api/models", timeout=5)
        except OSError as exc:
            print("blocked:", exc)
        assert attempts, "the guard let a connection through"
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=server_env(HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "blocked:" in done.stdout


class FakeEmbeddings:
    """An OpenAI-compatible `/v1/embeddings` on 127.0.0.1 that answers a fixed vector per word
    (a text's vector is the sum of its words'), in reverse order with each answer's `index`, as
    the API allows."""

    def __init__(self, *, dim: int = 8) -> None:
        self.dim = dim
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"), **body})
                data = [
                    {"object": "embedding", "index": index, "embedding": fake.vector(text).tolist()}
                    for index, text in enumerate(body["input"])
                ]
                payload = json.dumps(
                    {
                        "object": "list",
                        "data": data[::-1],
                        "model": body["model"],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def vector(self, text: str) -> np.ndarray:
        total = np.zeros(self.dim)
        for word in text.lower().split():
            total += np.random.default_rng(sum(map(ord, word))).normal(size=self.dim)
        return total

    def __enter__(self) -> FakeEmbeddings:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_embeddings() -> Iterator[FakeEmbeddings]:
    with FakeEmbeddings() as fake:
        yield fake


def test_endpoint_embedder_sends_model_and_key_and_keeps_the_input_order(fake_embeddings):
    embedder = EndpointEmbedder(
        base_url=fake_embeddings.url, model="fake-embed-1", api_key="sk-test-key", timeout=5, dimensions=None
    )
    first, empty, second = embedder.embed(["alpha beta", "   ", "gamma"])
    [request] = fake_embeddings.requests
    assert request["path"] == "/v1/embeddings"
    assert request["authorization"] == "Bearer sk-test-key"
    assert request["model"] == "fake-embed-1"
    assert request["input"] == ["alpha beta", "gamma"]  # nothing to embed is not sent
    assert empty is None
    expected = fake_embeddings.vector("alpha beta")
    assert np.allclose(first, expected / np.linalg.norm(expected), atol=1e-6)
    assert np.isclose(np.linalg.norm(second), 1.0, atol=1e-6)
    assert embedder.name == "openai/fake-embed-1" and embedder.dim == 8
