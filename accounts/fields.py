"""The bounded `metadata` JSON object every model carries (as in the original guide)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def metadata_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def validate_metadata(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("metadata must be a JSON object.", code="invalid")
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
