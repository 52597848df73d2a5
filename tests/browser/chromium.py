"""Real Chromium for browser tests (Debian's `chromium`, driven by Playwright; no browser is
downloaded), and a proxy whose connections can be cut at once (a network drop)."""

from __future__ import annotations

import os
import shutil
import socket
import threading

import pytest

from tests.servers import in_ci

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_skip() -> str:
    if os.path.exists(CHROMIUM) or shutil.which("chromium"):
        return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if in_ci():
        pytest.fail(f"Chromium is required in CI ({CHROMIUM}; .ci/run installs Debian's chromium)")
    pytest.skip(
        f"Chromium is not installed ({CHROMIUM}), so the browser test is skipped "
        "(apt-get install chromium; with CI=true it fails instead)"
    )


class CuttableProxy:
    """A TCP proxy to the core whose open connections can all be cut at once (a network drop);
    new connections are served as before. Keeps the first bytes each client sent (request heads)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heads: list[str] = []
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and data[:4] in (b"GET ", b"POST"):
                    self.heads.append(data.split(b"\r\n\r\n", 1)[0].decode("latin-1"))
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            connections, self._open = self._open, []
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()
