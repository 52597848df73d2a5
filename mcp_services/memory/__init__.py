"""The memory MCP service: per-user memory items (store, history, search, delete).

Reached by the core only over MCP; imports nothing from workspaces, streaming or the outbox."""
