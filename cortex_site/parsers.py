"""The JSON parser of every API view: bounded nesting.

DRF's parser lets `json.loads` recurse until Python's recursion limit (a 500 with a traceback for
a body nested about 3,000 deep). Here such a body is a 400 with the envelope, and so is any body
nested deeper than `MAX_JSON_DEPTH` plus the body object itself (so `metadata` gets its full 32
levels; its own bound is checked by `accounts.fields.validate_metadata`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from accounts.fields import json_depth_exceeds


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        limit = settings.CORTEX["MAX_JSON_DEPTH"] + 1
        if json_depth_exceeds(data, limit):
            raise ParseError(f"JSON parse error - nested deeper than {limit} levels.")
        return data
