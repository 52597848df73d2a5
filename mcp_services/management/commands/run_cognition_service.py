"""`manage.py run_cognition_service`: the cognition MCP service (streamable HTTP at /mcp, SSE, or stdio)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from common import tracing
from mcp_services import basics, serving
from mcp_services.client import ServiceClient
from mcp_services.cognition.server import build_cognition_server


class Command(BaseCommand):
    help = "Run the cognition MCP service (default http://127.0.0.1:9100/mcp); it reads memory over MCP."

    def add_arguments(self, parser: CommandParser) -> None:
        serving.add_service_arguments(parser, port=9100)
        parser.add_argument("--memory-url", default=None, help="Memory service URL (MEMORY_URL).")

    def handle(self, *args, **options) -> None:
        tracing.setup(tracing.COGNITION)
        cortex = settings.CORTEX
        # The one long-lived client this process uses for every get_context call.
        memory = ServiceClient(
            name="memory",
            target=options["memory_url"] or cortex["MEMORY_URL"],
            token=basics.cognition_token(),  # read-only at memory: search and history
            timeout=float(cortex["SERVICE_TIMEOUT_SECONDS"]),
        )
        auth = (
            {}
            if options["transport"] == "stdio"
            else serving.auth_options(host=options["host"], port=options["port"], cognition=True)
        )
        serving.run(
            build_cognition_server(memory=memory, **auth),
            transport=options["transport"],
            host=options["host"],
            port=options["port"],
            on_shutdown=memory.aclose,
        )
