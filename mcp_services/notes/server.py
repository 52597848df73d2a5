"""The notes expert: workspace notes over MCP (`add_note`, `search_notes`, `get_note`).

Its own service: it knows a workspace only as the `workspace_id` of the token the core minted for
the call (`auth.CoreTokenVerifier`), so two workspaces never see each other's notes, and it imports
nothing of the core's apps (workspaces, streaming).
"""

from __future__ import annotations

from typing import Any

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

from mcp_services.notes import selectors, services
from mcp_services.notes.auth import caller_for
from mcp_services.servers.common import db_call, refused_as_result

TOOLS_TTL_MS = 3600 * 1000


def build_notes_server(**auth: Any) -> MCPServer:
    """`auth`: `token_verifier=` (a `CoreTokenVerifier`) and `auth=` (`AuthSettings`)."""
    server = MCPServer(
        "CortexNotes",
        instructions="Notes shared by the members of a workspace: add, search, read.",
        # The tool list and capabilities change only with a new release: callers may keep them an hour.
        cache_hints={
            "tools/list": CacheHint(ttl_ms=TOOLS_TTL_MS, scope="public"),
            "server/discover": CacheHint(ttl_ms=TOOLS_TTL_MS, scope="public"),
        },
        **auth,
    )

    @server.tool()
    @refused_as_result
    async def add_note(title: str, body: str = "") -> dict[str, Any]:
        """Add a note to the workspace (title: 1 to 200 characters; body: up to 20,000)."""
        workspace_id, user_id = caller_for("add_note")
        note = await db_call(services.note_add)(workspace_id=workspace_id, author_id=user_id, title=title, body=body)
        return {"note": selectors.note_data(note)}

    @server.tool()
    @refused_as_result
    async def search_notes(query: str = "", limit: int = 10) -> dict[str, Any]:
        """The workspace's notes containing every word of the query (all notes for an empty one), newest first."""
        workspace_id, _ = caller_for("search_notes")
        notes = await db_call(selectors.note_search)(workspace_id=workspace_id, query=query, limit=limit)
        return {"notes": [selectors.note_data(note) for note in notes], "count": len(notes)}

    @server.tool()
    @refused_as_result
    async def get_note(note_id: str) -> dict[str, Any]:
        """One note of the workspace by id."""
        workspace_id, _ = caller_for("get_note")
        note = await db_call(selectors.note_get)(workspace_id=workspace_id, note_id=note_id)
        return {"note": selectors.note_data(note)}

    return server
