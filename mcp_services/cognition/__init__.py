"""The cognition MCP service: context for a user, read from memory over MCP."""
