"""`manage.py run_memory_service`: the memory MCP service (streamable HTTP at /mcp, SSE, or stdio)."""

from __future__ import annotations

import contextlib
import ctypes
import logging

from django.core.management.base import BaseCommand, CommandParser

from common import tracing
from mcp_services import serving
from mcp_services.memory import embedding
from mcp_services.memory.server import build_memory_server

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter


class Command(BaseCommand):
    help = "Run the memory MCP service (default http://127.0.0.1:9000/mcp)."

    def add_arguments(self, parser: CommandParser) -> None:
        serving.add_service_arguments(parser, port=9000)

    def handle(self, *args, **options) -> None:
        tracing.setup(tracing.MEMORY)
        limit_malloc_arenas()
        # The embedding model is loaded before serving: the first store must not wait for it.
        embedder = embedding.get_embedder()
        logger.info("memory service: embeddings %s", embedder.name if embedder else "off (keyword search only)")
        auth = (
            {} if options["transport"] == "stdio" else serving.auth_options(host=options["host"], port=options["port"])
        )
        serving.run(
            build_memory_server(**auth), transport=options["transport"], host=options["host"], port=options["port"]
        )


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), and memory
    freed in one is not reused by the others: the tools' worker threads left the service about 40 MB
    larger after batch stores (420 MB against 383 MB with two arenas, bench.memory). Elsewhere than
    glibc this does nothing."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
