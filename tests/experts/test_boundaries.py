"""The notes expert is its own service: its code imports nothing of the core's apps."""

from __future__ import annotations

import ast
from pathlib import Path

import mcp_services.notes

FORBIDDEN = ("workspaces", "streaming", "accounts", "mcp_services.experts")


def test_the_notes_expert_imports_nothing_of_workspaces_streaming_or_the_core_side():
    root = Path(mcp_services.notes.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {name}" for name in names if name.startswith(FORBIDDEN)]
    assert offenders == []
