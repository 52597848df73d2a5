"""The console's page and assets as the core serves them (no processes: Django's test client).
The page's behaviour is tested in a real browser: tests/browser/test_console*.py."""

from __future__ import annotations

import re

from django.test import Client


def test_console_page_has_a_policy_without_inline_script_and_requires_trusted_types():
    response = Client().get("/console/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "require-trusted-types-for 'script'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    html = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "no inline script"
    assert " style=" not in html and "<style" not in html, "no inline style"


def test_console_assets_are_served_from_the_project_without_a_build_step():
    client = Client()
    html = client.get("/console/").content.decode()
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {"/static/console/console.js", "/static/console/console.css", "/static/cortex/client.js"} <= set(assets)
    for asset in [*assets, "/static/console/dom.js"]:
        response = client.get(asset)
        assert response.status_code == 200, asset
        body = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined]
        assert b"https://" not in body.replace(b"https:'", b""), f"{asset} loads nothing from elsewhere"


def test_console_answers_only_safe_methods():
    assert Client(enforce_csrf_checks=False).post("/console/").status_code == 405
