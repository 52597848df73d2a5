"""The bounded `metadata` JSON object every model carries (as in the original guide)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def metadata_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest deeper than `limit` (`{}` is depth 1). Iterative: a deep value
    cannot exhaust the stack here, as it does `json.dumps` and the memory service's serializer."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def validate_metadata(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("metadata must be a JSON object.", code="invalid")
    depth = settings.CORTEX["MAX_JSON_DEPTH"]
    if json_depth_exceeds(value, depth):
        raise ValidationError(f"metadata may nest at most {depth} levels.", code="too_deep")
    limit = settings.CORTEX["MAX_METADATA_BYTES"]
    if metadata_size(value) > limit:
        raise ValidationError(f"metadata must be at most {limit} bytes of JSON.", code="too_large")


class MetadataField(models.JSONField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default", dict)
        kwargs.setdefault("blank", True)
        kwargs.setdefault("validators", [validate_metadata])
        super().__init__(*args, **kwargs)

    def deconstruct(self):  # keep migrations free of the validator callable
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("validators", None)
        return name, path, args, kwargs
