"""Logs an operator can search: one JSON object per line (`LOG_FORMAT=json`), each with the id of the
request it belongs to, and nothing secret in them.

The request id lives in a context variable: set by `common.web.asgi.ObservedApp` for every HTTP and
WebSocket request (from a well-formed incoming `X-Request-ID`, else a fresh one), returned in the
`X-Request-ID` response header, copied into threads by asgiref, sent on every MCP call the request
causes (`mcp_services.client`), and set again by the MCP services from that header, so one id
joins the core's lines to the memory and cognition services' lines for the same request.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID: ContextVar[str | None] = ContextVar("cortex_request_id", default=None)

_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")


# Unique, not secret: a random per-process prefix and a counter (a uuid4 costs 5 us per request).
_PREFIX = os.urandom(8).hex()
_SEQUENCE = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_SEQUENCE):016x}"


def request_id_from(incoming: bytes | str | None) -> str:
    """A caller's id if it is a plain token (a proxy's or a client's correlation id), else a new one:
    whatever goes into the logs must not be able to forge lines or carry a payload."""
    if incoming:
        if isinstance(incoming, bytes):
            incoming = incoming.decode("latin-1")
        if _ACCEPTABLE_ID.fullmatch(incoming):
            return incoming
    return new_request_id()


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


# Credentials that could reach a message by accident (an exception quoting a URL or a header).
_SECRETS = [
    (re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"), r"\1[redacted]"),
    (
        re.compile(r"(?i)((?:ticket|token|access_token|refresh_token|jwt|password|authorization)=)[^&\s\"']+"),
        r"\1[redacted]",
    ),
    (
        re.compile(r"(?i)([\"'](?:ticket|access_token|refresh_token|password|token)[\"']\s*:\s*[\"'])[^\"']*"),
        r"\1[redacted]",
    ),
]


_MAYBE_SECRET = re.compile(r"(?i)bearer|=|\"|'")


def redact(text: str) -> str:
    if not _MAYBE_SECRET.search(text):  # most lines: nothing to scrub, one cheap scan
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Scrubs tokens, tickets and passwords from the formatted message (a second line of defence:
    the code logs ids, never credentials or message content)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: time, level, logger, message, request_id, and any `extra=` fields."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("timestamp", "time")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        super().__init__("%(levelname)s %(name)s %(message)s %(request_id)s", *args, **kwargs)  # type: ignore[arg-type]


def logging_config(*, log_format: str, level: str) -> dict:
    """Django's LOGGING for `LOG_FORMAT` (`plain` or `json`)."""
    if log_format not in ("plain", "json"):
        raise ValueError(f"LOG_FORMAT must be plain or json, got {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "common.logs.RequestIdFilter"},
            "redact": {"()": "common.logs.RedactingFilter"},
        },
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
            "json": {"()": "common.logs.JsonFormatter"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["request_id", "redact"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "django.server": {"level": "WARNING"},
            "httpx2": {"level": "WARNING"},
            # uvicorn configures its own handlers before Django starts: route them through ours. Its
            # access lines carry query strings (`?ticket=`), ours (`cortex.access`) do not.
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"handlers": [], "level": "INFO", "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": True},
        },
    }
