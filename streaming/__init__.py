"""The durable per-user event log and its live output: SSE, WebSocket, tickets and fan-out."""
