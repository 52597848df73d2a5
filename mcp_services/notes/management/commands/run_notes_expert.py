"""`manage.py run_notes_expert`: the notes expert (streamable HTTP at http://127.0.0.1:9200/mcp).

Register it in a workspace (`POST /config/workspace/<id>/experts` with this URL and auth
`core_token`); it verifies each call's token against the core's public keys (`NOTES_JWKS_URL`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from mcp.server.auth.settings import AuthSettings

from mcp_services import serving
from mcp_services.notes.auth import CoreTokenVerifier
from mcp_services.notes.server import build_notes_server


class Command(BaseCommand):
    help = "Run the notes expert MCP server (default http://127.0.0.1:9200/mcp)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Bind address.")
        parser.add_argument("--port", type=int, default=9200)
        parser.add_argument("--jwks-url", default=None, help="The core's public keys (NOTES_JWKS_URL).")
        parser.add_argument(
            "--url",
            action="append",
            default=None,
            help="A URL the expert is registered under (the tokens' audience; repeatable). "
            "Default: http://127.0.0.1:PORT/mcp and http://localhost:PORT/mcp.",
        )

    def handle(self, *args, **options) -> None:
        host, port = options["host"], options["port"]
        audiences = options["url"] or [f"http://127.0.0.1:{port}/mcp", f"http://localhost:{port}/mcp"]
        jwks_url = str(options["jwks_url"] or settings.NOTES_JWKS_URL)
        core = urlsplit(jwks_url)
        verifier = CoreTokenVerifier(
            jwks_url=jwks_url,
            issuer=str(settings.JWT_ISSUER),
            audiences=audiences,
        )
        # The authorization server is the core (it issues the tokens); this expert is a resource server.
        auth = AuthSettings(issuer_url=f"{core.scheme}://{core.netloc}", resource_server_url=None)  # type: ignore[arg-type]
        serving.run(
            build_notes_server(token_verifier=verifier, auth=auth), transport="streamable-http", host=host, port=port
        )
