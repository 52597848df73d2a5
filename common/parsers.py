"""`StrictJSONParser`: JSON whose strings every database can store and every response can encode.

JSON may spell characters that no text column takes: `\\u0000` (PostgreSQL refuses NUL in text and
jsonb) and unpaired surrogates such as `\\ud800` (not encodable as UTF-8, so echoing them back
fails). Both are refused at parse time, as malformed input (400), before any view sees them.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _unstorable(value: Any) -> bool:
    if isinstance(value, str):
        if "\x00" in value:
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_unstorable(key) or _unstorable(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_unstorable(item) for item in value)
    return False


class StrictJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if _unstorable(data):
            raise ParseError("JSON strings may not contain NUL characters or unpaired surrogates.")
        return data
