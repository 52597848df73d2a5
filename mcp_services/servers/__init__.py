"""The MCP services: memory (`memory.py`) and cognition (`cognition.py`), and what they share."""
