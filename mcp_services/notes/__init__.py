"""The notes expert: an MCP server (its own service) for workspace notes, called with tokens the core mints."""
