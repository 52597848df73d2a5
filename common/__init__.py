"""Shared by every app and importing none: errors, logs, metrics, the schema, `web/` (HTTP plumbing).

Model-free and app-free: nothing here imports `accounts`, `workspaces`, `streaming`,
`mcp_services` or `turns` (the layers contract in `pyproject.toml`), so any app may import it.
"""
