"""`manage.py run_memory_service`: the memory MCP service (streamable HTTP at /mcp, SSE, or stdio)."""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand, CommandParser

from mcp_services import serving
from mcp_services.memory import embedding
from mcp_services.memory.server import build_memory_server

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the memory MCP service (default http://127.0.0.1:9000/mcp)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_service_arguments(parser, port=9000)

    def handle(self, *args, **options) -> None:
        # The embedding model is loaded before serving: the first store must not wait for it.
        embedder = embedding.get_embedder()
        logger.info("memory service: embeddings %s", embedder.name if embedder else "off (keyword search only)")
        auth = (
            {} if options["transport"] == "stdio" else serving.auth_options(host=options["host"], port=options["port"])
        )
        serving.run(
            build_memory_server(**auth), transport=options["transport"], host=options["host"], port=options["port"]
        )


def add_service_arguments(parser: CommandParser, *, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (loopback unless a token is set).")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--transport", choices=serving.TRANSPORTS, default="streamable-http")
