"""`GET /console/`: the page's HTML shell. Everything else is static files and the public API.

The policy allows scripts, styles and connections from this origin only (no inline script or
style, no `eval`), and requires Trusted Types, so an HTML string can never reach an HTML sink such
as `innerHTML`: the page builds its DOM from elements and text nodes, and whatever users, models
and experts wrote stays text even if a bug tried otherwise.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.csp import CSP, build_policy
from django.views.decorators.http import require_safe

POLICY: dict[str, list[str]] = {
    "default-src": [CSP.NONE],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    # blob:: an expert's images, shown from their decoded bytes (never from a URL the expert gave).
    "img-src": [CSP.SELF, "blob:"],
    "connect-src": [CSP.SELF],
    "manifest-src": [CSP.SELF],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "object-src": [CSP.NONE],
    "require-trusted-types-for": ["'script'"],
    "trusted-types": [CSP.NONE],
}
HEADER = build_policy(POLICY)


@require_safe
def console(request: HttpRequest) -> HttpResponse:
    response = render(request, "console/index.html")
    response["Content-Security-Policy"] = HEADER
    response["Cache-Control"] = "no-cache"
    response["Referrer-Policy"] = "same-origin"
    return response
