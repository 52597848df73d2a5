"""The core's MCP client against the MCP conformance suite's client scenarios.

    PATH=<node 22>/bin:$PATH npx @modelcontextprotocol/conformance client \\
        --command "env DEBUG=1 EXPERT_ALLOWED_HOSTS=localhost:*,127.0.0.1:*,[::1]:* .venv/bin/python scripts/conformance_client.py" \\
        --scenario elicitation-sep1034-client-defaults

It connects to the scenario's server with `mcp_services.experts.discovery.connect` (what every expert
call uses: the capabilities it declares, revision handling), lists the tools and calls each with no
arguments. A question is answered as a person who accepts the form as shown would answer it: `accept`
with nothing typed, the schema's defaults filled in by `schema_defaults_apply` (as the inbox's answer
path does before validating). The host policy checks the address a name resolves to as well as the
name (DNS rebinding), so the scenario's `localhost` needs its loopback addresses listed too.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")

import django  # noqa: E402

django.setup()

from mcp_types import ElicitResult  # noqa: E402

from mcp_services.experts.discovery import Caller, connect, discover  # noqa: E402
from turns.inbox.services import schema_defaults_apply  # noqa: E402


async def accept_as_shown(context, params) -> ElicitResult:
    schema = dict(getattr(params, "requested_schema", None) or {})
    return ElicitResult(action="accept", content=schema_defaults_apply(schema, {}))


async def main(url: str) -> int:
    caller = Caller(uuid.uuid4(), uuid.uuid4())
    found = await discover(url=url, auth="none", caller=caller)
    print(f"discovery: {found.status} {found.error} tools={[tool['name'] for tool in found.tools]}", file=sys.stderr)
    async with connect(
        url=url, auth="none", caller=caller, tool="conformance", timeout=30, elicit=accept_as_shown
    ) as conn:
        for tool in found.tools:
            result = await conn.client.session.call_tool(tool["name"], {}, allow_input_required=True)
            print(f"{tool['name']}: {result}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[-1])))
