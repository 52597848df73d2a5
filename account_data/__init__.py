"""Your memory and your data: `/memory` (see, search, add, correct, delete what the assistant
remembers) and `/account` (export everything, erase the account). Builds on every other app and
reaches memory only through the memory service's MCP tools."""
