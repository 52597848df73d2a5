"""The JSON parser of every API view: bounded nesting, and only strings a database can store.

DRF's parser lets `json.loads` recurse until Python's recursion limit (a 500 with a traceback for
a body nested about 3,000 deep). Here such a body is a 400 with the envelope, and so is any body
nested deeper than `MAX_JSON_DEPTH` plus the body object itself (so `metadata` gets its full 32
levels; its own bound is checked by `common.fields.validate_metadata`).

JSON may also spell characters no text column takes: `\\u0000` (PostgreSQL refuses NUL in text
and jsonb) and unpaired surrogates such as `\\ud800` (not encodable as UTF-8, so echoing them back
fails). Both are refused here too, as malformed input, before any view sees them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from common.fields import json_depth_exceeds


def unstorable(value: Any) -> bool:
    """Whether a parsed JSON value holds a string no text column takes (NUL, an unpaired surrogate)."""
    if isinstance(value, str):
        if "\x00" in value:
            return True
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(unstorable(key) or unstorable(item) for key, item in value.items())
    if isinstance(value, list):
        return any(unstorable(item) for item in value)
    return False


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        limit = settings.CORTEX["MAX_JSON_DEPTH"] + 1
        if json_depth_exceeds(data, limit):
            raise ParseError(f"JSON parse error - nested deeper than {limit} levels.")
        if unstorable(data):
            raise ParseError("JSON strings may not contain NUL characters or unpaired surrogates.")
        return data
