"""What speaks MCP: the memory, cognition and notes services, the MCP client, experts and the memory outbox."""
