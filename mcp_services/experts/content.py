"""A tool result's content blocks as `tool.result` carries them (CONTRACT.md, "Expert calls").

An expert may be hostile: every block is checked and bounded before it goes into every
participant's log. Images, audio and binary resources stay inline (base64) only when they decode
(strict base64), are at most EXPERT_INLINE_BLOB_BYTES each and fit, all together, within
EXPERT_RESULT_MAX_BYTES; otherwise they are `omitted` with their size. Strings are cut, a link's
URI is kept only with a scheme and no control characters, and at most EXPERT_RESULT_MAX_BLOCKS
blocks are kept.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from django.conf import settings
from mcp_types import AudioContent, BlobResourceContents, EmbeddedResource, ImageContent, ResourceLink, TextContent

URI_MAX_CHARS = 2048
NAME_MAX_CHARS = 256
DESCRIPTION_MAX_CHARS = 1000
RESOURCE_TEXT_MAX_CHARS = 16_000
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]{0,31}:[^\x00-\x20\x7f]*$")


def _cut(text: Any, limit: int) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[:limit] + "…"


def _mime(value: Any) -> str | None:
    mime = str(value or "").strip().lower()
    return mime if _MIME.match(mime) else None


def _uri(value: Any) -> str | None:
    uri = str(value or "")
    return uri if len(uri) <= URI_MAX_CHARS and _URI.match(uri) else None


def _decoded_size(data: str) -> int | None:
    """The decoded size of strict base64, or None when it is not base64."""
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return None


class _Budget:
    def __init__(self) -> None:
        self.left = settings.EXPERT_RESULT_MAX_BYTES

    def blob(self, block: dict[str, Any], data: str) -> dict[str, Any]:
        """`data` inline when it decodes and fits; else `omitted` with its size (or `invalid`)."""
        size = _decoded_size(data)
        if size is None:
            return {**block, "omitted": True, "invalid": True}
        if size > settings.EXPERT_INLINE_BLOB_BYTES or len(data) > self.left:
            return {**block, "omitted": True, "size": size}
        self.left -= len(data)
        return {**block, "data": data, "size": size}


def result_blocks(content: list[Any]) -> tuple[list[dict[str, Any]], int]:
    """The non-text blocks of a tool result, checked and bounded, and how many were left out."""
    budget = _Budget()
    blocks: list[dict[str, Any]] = []
    dropped = 0
    for part in content:
        if isinstance(part, TextContent):
            continue
        if len(blocks) >= settings.EXPERT_RESULT_MAX_BLOCKS:
            dropped += 1
            continue
        block = _block(part, budget)
        if block is None:
            dropped += 1
        else:
            blocks.append(block)
    return blocks, dropped


def _block(part: Any, budget: _Budget) -> dict[str, Any] | None:
    if isinstance(part, ImageContent | AudioContent):
        mime = _mime(part.mime_type)
        if mime is None or not mime.startswith(f"{part.type}/"):
            return None
        return budget.blob({"type": part.type, "mime_type": mime}, part.data)
    if isinstance(part, ResourceLink):
        uri = _uri(part.uri)
        if uri is None:
            return None
        link: dict[str, Any] = {"type": "resource_link", "uri": uri, "name": _cut(part.name, NAME_MAX_CHARS)}
        if (mime := _mime(part.mime_type)) is not None:
            link["mime_type"] = mime
        if part.description:
            link["description"] = _cut(part.description, DESCRIPTION_MAX_CHARS)
        return link
    if isinstance(part, EmbeddedResource):
        resource = part.resource
        uri = _uri(resource.uri)
        if uri is None:
            return None
        embedded: dict[str, Any] = {"type": "resource", "uri": uri}
        if (mime := _mime(resource.mime_type)) is not None:
            embedded["mime_type"] = mime
        if isinstance(resource, BlobResourceContents):
            return budget.blob(embedded, resource.blob)
        text = str(resource.text)
        if len(text.encode()) > budget.left:
            return {**embedded, "omitted": True, "size": len(text.encode())}
        embedded["text"] = _cut(text, RESOURCE_TEXT_MAX_CHARS)
        budget.left -= len(embedded["text"].encode())
        return embedded
    return None
