"""Startup checks: a core without expert signing keys says so (its `core_token` experts cannot be
called), and an `EXPERT_ALLOWED_HOSTS` entry that cannot be read stops it."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.checks import Error as CheckError
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured

from mcp_services.experts import tokens

logger = logging.getLogger(__name__)


def signing_keys_check(app_configs: Any = None, **kwargs: Any) -> list[CheckWarning]:
    if settings.SERVICE_PROCESS:
        return []  # a service process mints nothing, and is never given the keys
    reason = tokens.unconfigured_reason()
    if reason is None:
        return []
    return [
        CheckWarning(
            reason,
            hint="Set EXPERT_SIGNING_KEYS to Ed25519 private key PEM files (see .env.example).",
            id="cortex.W001",
        )
    ]


def allowed_hosts_check(app_configs: Any = None, **kwargs: Any) -> list[CheckError]:
    from mcp_services.experts import hosts  # (its HTTP client is for the processes that call experts)

    try:
        hosts.url_refusal("http://check.invalid/")
    except ImproperlyConfigured as exc:
        return [CheckError(str(exc), hint="See EXPERT_ALLOWED_HOSTS in .env.example.", id="cortex.E001")]
    return []


def warn_at_startup() -> None:
    for warning in signing_keys_check():
        logger.warning("%s (%s)", warning.msg, warning.hint)
