"""Shared by every app and imported by none of their models: errors, logs, metrics, the schema.

Model-free and app-free: nothing here imports `accounts`, `workspaces`, `streaming` or
`mcp_services`, so any app (and `cortex_site`'s configuration) may import it without a cycle.
"""
