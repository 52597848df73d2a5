"""What the MCP servers (`serving`) share with their callers in the core, without importing the MCP
SDK: every Django process imports these at start-up (the apps' receivers and admin), and importing
the SDK (pydantic models for three protocol revisions) is about 40% of a process's start. So it is
imported by the processes that call or serve MCP: the memory and cognition services, the turn
worker, the outbox's delivery, and the core (at start-up, `operations.health`: its readiness and its
calls run under time limits); not by `manage.py shell`, `migrate`, `create_user` and the other
commands that only touch the database."""

from __future__ import annotations

import ipaddress

from django.conf import settings


def cognition_token() -> str:
    """The one rule for cognition's credential, checked by cognition and sent by every caller: its own
    read-only token (CORTEX_COGNITION_TOKEN), else the service token."""
    return settings.CORTEX["COGNITION_TOKEN"] or settings.CORTEX["SERVICE_TOKEN"] or ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
