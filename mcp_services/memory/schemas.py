"""The memory tools' argument types: the SDK validates them and publishes them as each tool's
`inputSchema`, so a caller (or a model) sees the bounds before it calls."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from mcp_services.basics import MAX_CONTENT_CHARS, MAX_KEY_CHARS, MAX_QUERY_CHARS

MAX_BATCH_ITEMS = 1000

Query = Annotated[str, Field(max_length=MAX_QUERY_CHARS)]
# An item or conversation id as memory stores it (a conversation id is usually a UUID, not always).
Key = Annotated[str, Field(max_length=MAX_KEY_CHARS)]
# What a person adds or corrects by hand (the whole item stays within MEMORY_MAX_ITEM_BYTES).
MemoryContent = Annotated[str, Field(min_length=1, max_length=MAX_CONTENT_CHARS, pattern=r"\S")]


def max_limit() -> int:
    """The largest `limit` a tool takes (MEMORY_MAX_LIMIT), read when a server is built: the bound
    is part of the published schema (`Annotated[int, Field(ge=1, le=max_limit())]`)."""
    return settings.CORTEX["MEMORY_MAX_LIMIT"]


class MemoryInput(BaseModel):
    """One input as `store_input` takes it: these keys are checked, any other key is kept as is.

    Stored exactly as given, with `id` (a new UUID) and `timestamp` (now) added when missing.
    """

    model_config = ConfigDict(extra="allow")

    id: Annotated[StrictStr, Field(max_length=MAX_KEY_CHARS)] | StrictInt | None = Field(
        default=None, description="Idempotency key: a retry with the same id stores nothing new."
    )
    timestamp: StrictStr | None = Field(default=None, description="ISO 8601 date-time; now when missing.")
    content: StrictStr = Field(default="", description="The searchable text.")
    conversation_id: StrictStr | None = None

    @field_validator("timestamp")
    @classmethod
    def _iso_8601(cls, value: str | None) -> str | None:
        if value:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be an ISO 8601 date-time string") from None
        return value

    def as_stored(self) -> dict[str, Any]:
        """The caller's object: every key it sent (unknown ones included), none it did not."""
        return self.model_dump(exclude_unset=True)


class StoreItem(BaseModel):
    """One entry of `store_inputs`; each is validated on its own, so a bad one fails alone."""

    user_id: uuid.UUID
    input_data: MemoryInput
