"""The notes expert: workspace notes over MCP (`add_note`, `search_notes`, `get_note`, `delete_note`).

Its own service: it knows a workspace only as the `workspace_id` of the token the core minted for
the call (`auth.CoreTokenVerifier`), so two workspaces never see each other's notes, and it imports
nothing of the core's apps (workspaces, streaming; the import-linter contract in pyproject.toml).
Arguments are typed and bounded, so the SDK validates them and publishes the real `inputSchema`;
a refusal comes back as an error result carrying the envelope (`serving.CortexMCPServer`).

The read tools say so (`readOnlyHint`): a core runs them at once and asks before the others.
`delete_note` asks the user to confirm with the 2026-07-28 form (`input_required`): it answers the
call with its question and holds nothing; the client calls again with the answer.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context
from mcp_types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult, ToolAnnotations
from pydantic import Field

from common.db import db_call
from mcp_services.notes import selectors, services
from mcp_services.notes.auth import caller_for
from mcp_services.serving import CortexMCPServer

TOOLS_TTL_MS = 3600 * 1000

Title = Annotated[str, Field(min_length=1, max_length=services.MAX_TITLE_CHARS)]
Body = Annotated[str, Field(max_length=services.MAX_BODY_CHARS)]
Query = Annotated[str, Field(max_length=selectors.MAX_QUERY_CHARS)]
Limit = Annotated[int, Field(ge=1, le=selectors.MAX_LIMIT)]

READ_ONLY = ToolAnnotations(read_only_hint=True)
CONFIRM = "confirm"  # the key of delete_note's question in `input_requests`
CONFIRM_SCHEMA = {
    "type": "object",
    "properties": {"confirm": {"type": "boolean", "title": "Delete this note?"}},
    "required": ["confirm"],
}


def build_notes_server(**auth: Any) -> CortexMCPServer:
    """`auth`: `token_verifier=` (a `CoreTokenVerifier`) and `auth=` (`AuthSettings`)."""
    server = CortexMCPServer(
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
    async def add_note(title: Title, body: Body = "") -> dict[str, Any]:
        """Add a note to the workspace (title: 1 to 200 characters; body: up to 20,000)."""
        workspace_id, user_id = caller_for("add_note")
        note = await db_call(services.note_add)(workspace_id=workspace_id, author_id=user_id, title=title, body=body)
        return {"note": selectors.note_data(note)}

    @server.tool(annotations=READ_ONLY)
    async def search_notes(query: Query = "", limit: Limit = 10) -> dict[str, Any]:
        """The workspace's notes containing every word of the query (all notes for an empty one), newest first."""
        workspace_id, _ = caller_for("search_notes")
        notes = await db_call(selectors.note_search)(workspace_id=workspace_id, query=query, limit=limit)
        return {"notes": [selectors.note_data(note) for note in notes], "count": len(notes)}

    @server.tool(annotations=READ_ONLY)
    async def get_note(note_id: uuid.UUID) -> dict[str, Any]:
        """One note of the workspace by id."""
        workspace_id, _ = caller_for("get_note")
        note = await db_call(selectors.note_get)(workspace_id=workspace_id, note_id=note_id)
        return {"note": selectors.note_data(note)}

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    async def delete_note(note_id: uuid.UUID, ctx: Context) -> dict[str, Any] | InputRequiredResult:
        """Delete a note of the workspace, after the user confirms (they are asked)."""
        workspace_id, _ = caller_for("delete_note")
        note = await db_call(selectors.note_get)(workspace_id=workspace_id, note_id=note_id)
        reply = (ctx.input_responses or {}).get(CONFIRM)
        if not isinstance(reply, ElicitResult):
            question = ElicitRequestFormParams(
                message=f"Delete the note {note.title!r}? This cannot be undone.", requested_schema=CONFIRM_SCHEMA
            )
            return InputRequiredResult(input_requests={CONFIRM: ElicitRequest(params=question)})
        if reply.action != "accept" or not (reply.content or {}).get("confirm"):
            return {"deleted": False, "note_id": str(note_id)}
        await db_call(services.note_delete)(workspace_id=workspace_id, note_id=note_id)
        return {"deleted": True, "note_id": str(note_id)}

    return server
