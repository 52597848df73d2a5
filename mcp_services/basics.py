"""What the MCP servers (`serving`) share with their callers in the core, without importing the MCP
SDK: every Django process imports these at start-up (the apps' receivers), and importing the SDK
(pydantic models for three protocol revisions) is about 40% of a process's start. So it is imported
by the processes that call or serve MCP: the memory and cognition services, the turn worker, the
outbox's delivery, and the core (at start-up when it delivers memory after each commit, else at its
first service call: cortex_site/asgi.py); not by `manage.py shell`, `migrate`, `create_user` and the
other commands that only touch the database."""

from __future__ import annotations

import ipaddress

from django.conf import settings

# The memory tools' bounds (mcp_services.memory.schemas), which the core's account API applies too:
# here, so the core's URLconf does not import the tools' pydantic models for three numbers.
MAX_QUERY_CHARS = 1000
MAX_KEY_CHARS = 255
MAX_CONTENT_CHARS = 10_000  # what a person adds or corrects by hand


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
