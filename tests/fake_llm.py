"""A fake OpenAI-compatible chat completions server for tests and benchmarks (loopback only).

`python -m uvicorn tests.fake_llm:app --port N` with FAKE_LLM_LOG=<file>: every request is appended
to that file as one JSON line (headers, body, and when the first content chunk was sent, as
`time.time()`), so a test can check what the core's worker sent and a benchmark can time the stream.

Streams `chat.completion.chunk`s like the real API. The script, from the last message:
- a user message containing "[tool]" (and no tool answer yet): a call of the tool `notes__add_note`
  with `{"title": "milk"}`, its arguments split over two chunks;
- otherwise: "Hello from the fake model." in word chunks, FAKE_LLM_CHUNK_DELAY_MS apart (after a
  tool answer: "Noted: <the tool's answer>"); a user message containing "[long]" gets 40 words.

With `stream_options.include_usage`, a last chunk with no choices reports `usage` as the real API
does: prompt tokens = the request messages' characters // 4 + 1, completion tokens = the chunks sent
(both logged with the request, as `usage`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

ANSWER = "Hello from the fake model."


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _record(entry: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_LLM_LOG")
    if path:
        with open(path, "a") as log:
            log.write(json.dumps(entry) + "\n")


async def app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error": {"message": "not found"}}'})
        return
    request = json.loads(body)
    headers = {name.decode(): value.decode() for name, value in scope["headers"]}
    messages = request.get("messages", [])
    last = messages[-1] if messages else {}
    delay = int(os.environ.get("FAKE_LLM_CHUNK_DELAY_MS", "0")) / 1000
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    first_chunk_at = None
    sent = 0
    if last.get("role") == "user" and "[tool]" in str(last.get("content")):
        await send({"type": "http.response.body", "body": _chunk({"role": "assistant"}), "more_body": True})
        first = {"index": 0, "id": "call_fake1", "type": "function"}
        first["function"] = {"name": "notes__add_note", "arguments": '{"title"'}
        await send({"type": "http.response.body", "body": _chunk({"tool_calls": [first]}), "more_body": True})
        rest = {"index": 0, "function": {"arguments": ': "milk"}'}}
        await send({"type": "http.response.body", "body": _chunk({"tool_calls": [rest]}), "more_body": True})
        await send({"type": "http.response.body", "body": _chunk({}, "tool_calls"), "more_body": True})
        sent = 3
    else:
        if last.get("role") == "tool":
            text = f"Noted: {last.get('content')}"
        elif "[long]" in str(last.get("content")):
            text = " ".join(f"word{n}" for n in range(40))
        else:
            text = ANSWER
        words = text.split(" ")
        for index, word in enumerate(words):
            if index and delay:
                await asyncio.sleep(delay)
            piece = word if index == 0 else f" {word}"
            sent += 1
            await send({"type": "http.response.body", "body": _chunk({"content": piece}), "more_body": True})
            if first_chunk_at is None:
                first_chunk_at = time.time()
        await send({"type": "http.response.body", "body": _chunk({}, "stop"), "more_body": True})
    usage = None
    if (request.get("stream_options") or {}).get("include_usage"):
        prompt = sum(len(str(message.get("content") or "")) for message in messages) // 4 + 1
        usage = {"prompt_tokens": prompt, "completion_tokens": sent, "total_tokens": prompt + sent}
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "fake-model",
            "choices": [],
            "usage": usage,
        }
        await send({"type": "http.response.body", "body": f"data: {json.dumps(body)}\n\n".encode(), "more_body": True})
    _record(
        {"headers": headers, "body": request, "first_chunk_at": first_chunk_at, "usage": usage}
    )  # before the client can go on
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
