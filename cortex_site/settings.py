"""Cortex Core settings, read from the environment (see `.env.example`).

DEBUG is off unless `DEBUG=1`. Outside debug mode the process refuses to start without
`SECRET_KEY`, `JWT_SIGNING_KEY` and `ALLOWED_HOSTS`, so a forgotten variable is a loud failure
instead of a deployment running on a published key.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from common.logs import logging_config
from common.openapi import error_response as _error_response

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value if value else default


def env_bool(name: str, default: bool = False) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = env_str(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_json(name: str, default: Any) -> Any:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be JSON: {exc}") from None


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env_str(name) or default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


DEBUG = env_bool("DEBUG", False)

_DEBUG_ONLY_SECRET = "insecure-debug-only-secret-key-never-use-in-production"
_DEBUG_ONLY_JWT_KEY = "insecure-debug-only-jwt-signing-key-never-use-in-production"

# The memory and cognition MCP services (`run_cortex` sets this for them) sign nothing and verify
# no user token: they run without SECRET_KEY and JWT_SIGNING_KEY, which they are never given, so a
# compromised service process cannot mint user tokens. Django gets a throwaway key of its own.
SERVICE_PROCESS = env_bool("CORTEX_SERVICE_PROCESS", False)

SECRET_KEY = env_str("SECRET_KEY") or (_DEBUG_ONLY_SECRET if DEBUG else None)
JWT_SIGNING_KEY = env_str("JWT_SIGNING_KEY") or (_DEBUG_ONLY_JWT_KEY if DEBUG else None)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
if SERVICE_PROCESS:
    import secrets as _secrets

    SECRET_KEY = SECRET_KEY or _secrets.token_urlsafe(48)
    JWT_SIGNING_KEY = JWT_SIGNING_KEY or _secrets.token_urlsafe(48)  # signs nothing: unknown to all
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["127.0.0.1", "localhost", "[::1]"]

if not DEBUG:
    missing = [
        name
        for name, value in (
            ("SECRET_KEY", SECRET_KEY),
            ("JWT_SIGNING_KEY", JWT_SIGNING_KEY),
            ("ALLOWED_HOSTS", ALLOWED_HOSTS),
        )
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"Refusing to start with DEBUG off: set {', '.join(missing)} "
            "(see .env.example), or set DEBUG=1 for local development."
        )
    if len(SECRET_KEY or "") < 32 or len(JWT_SIGNING_KEY or "") < 32:
        raise ImproperlyConfigured("SECRET_KEY and JWT_SIGNING_KEY must be at least 32 characters.")
if SECRET_KEY == JWT_SIGNING_KEY:
    raise ImproperlyConfigured("JWT_SIGNING_KEY must differ from SECRET_KEY.")
if "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS may not contain '*': list the host names served.")

CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# daphne's app only brings its ASGI `runserver` (development); importing it installs twisted's
# reactor, about 8% of every Django process's start, so only `manage.py runserver` loads it
# (`run_cortex` serves with uvicorn; `python -m daphne` needs no app).
_RUNSERVER = sys.argv[1:2] == ["runserver"]
INSTALLED_APPS = [
    *(["daphne"] if _RUNSERVER else []),
    "common.admin.AdminConfig",  # django.contrib.admin, its modules imported where it is used
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "accounts",
    "workspaces",
    "streaming",
    "mcp_services",
    "connections",
    "schedules",
    "webhooks",
    "turns",
    "usage",
    "audit",
    "operations",
    "mcp_services.notes",
    "console",
]

MIDDLEWARE = [
    "common.web.envelope.error_envelope",
    "django.middleware.security.SecurityMiddleware",
    "common.web.middleware.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# The API's paths (see `cortex_site.asgi`) run only async middleware: no thread hop per request.
API_MIDDLEWARE = ["common.web.envelope.AsyncErrorEnvelope", "common.web.middleware.ApiSecurityMiddleware"]

ROOT_URLCONF = "cortex_site.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "cortex_site.asgi.application"

# Database: PostgreSQL (psycopg 3 with Django's pool) when DATABASE_URL is set, else SQLite.
# SQLite runs in WAL mode with IMMEDIATE transactions: the core and the memory service share the
# file, and deferred transactions fail with "database is locked" under concurrent writers.
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    import dj_database_url

    _db = dj_database_url.parse(DATABASE_URL)
    if _db["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// URL (or unset for SQLite).")
    # Persistent connections leak under ASGI; the pool hands connections back after each use.
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"] = {"pool": {"min_size": 1, "max_size": env_int("DATABASE_POOL_SIZE", 10, minimum=1)}}
    DATABASES = {"default": _db}
else:
    SQLITE_PATH = Path(env_str("SQLITE_PATH") or BASE_DIR / "var" / "db.sqlite3")
    SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            # Django's SQLite backend with a write turn across the processes and threads that write
            # the file (common/db/sqlite/base.py): a writer waiting for another is woken at its
            # commit, not at SQLite's next busy-handler try. SQLITE_WRITE_TURN=0: Django's backend.
            "ENGINE": "common.db.sqlite",
            "NAME": str(SQLITE_PATH),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "write_turn": env_bool("SQLITE_WRITE_TURN", True),
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not Django's shared-cache memory database: tests see the same locking as production.
            "TEST": {"NAME": str(SQLITE_PATH.with_name(f"{SQLITE_PATH.stem}-test.sqlite3"))},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Set STATIC_ROOT to run collectstatic for a CDN or proxy; without it whitenoise serves from the apps.
STATIC_ROOT = env_str("STATIC_ROOT")
# The admin's CSS/JS straight from the installed apps: no collectstatic step is needed to run.
WHITENOISE_USE_FINDERS = True

# Request bodies beyond this are refused before parsing (413); content limits are tighter still.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 256 * 1024, minimum=1024)

if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY") else None

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.CachedJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["common.web.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "common.web.handlers.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "common.schema.AutoSchema",
    # Login requests per client address (see TRUSTED_PROXIES); refresh and logout per user (or per
    # address for tokens that name no valid user); context per user. Failed logins have their own
    # per-account and per-address limits (LOGIN_FAILURES_* below).
    "DEFAULT_THROTTLE_RATES": {
        "login": env_str("LOGIN_RATE", "300/min"),
        "refresh": env_str("REFRESH_RATE", "30/min"),
        "input": env_str("INPUT_RATE", "600/min"),
        # Conversations per user: each one can hold a queued turn at the head of its queue.
        "conversation": env_str("CONVERSATION_RATE", "60/min"),
        "ticket": env_str("TICKET_RATE", "60/min"),
        "context": env_str("CONTEXT_RATE", "120/min"),
        # Per user, the expert requests that discover (register, patch, refresh: each connects out).
        "expert_discovery": env_str("EXPERT_DISCOVERY_RATE", "20/min"),
        "memory": env_str("MEMORY_RATE", "300/min"),
        "export": env_str("EXPORT_RATE", "5/hour"),
        "account_erase": env_str("ACCOUNT_ERASE_RATE", "10/hour"),
        # Per user, the writes of /schedules and /webhooks (a run now posts an input; a webhook connects out).
        "schedules": env_str("SCHEDULES_RATE", "60/min"),
        "webhooks": env_str("WEBHOOKS_RATE", "60/min"),
    },
    "UNAUTHENTICATED_USER": None,
}

# Proxies whose X-Forwarded-For is believed (IP addresses or networks, comma-separated). None by
# default: the client address is the peer's, whatever headers it sends. With proxies listed, the
# client is the rightmost X-Forwarded-For entry that is not itself a listed proxy.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")

# Failed logins: at most LOGIN_FAILURES_PER_ACCOUNT per account and LOGIN_FAILURES_PER_ADDRESS per
# client address within LOGIN_FAILURE_WINDOW_SECONDS; beyond that, 429 with Retry-After (API) or a
# refused form (admin) until the window ends. Successful logins do not count.
LOGIN_FAILURES_PER_ACCOUNT = env_int("LOGIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
LOGIN_FAILURES_PER_ADDRESS = env_int("LOGIN_FAILURES_PER_ADDRESS", 100, minimum=1)
LOGIN_FAILURE_WINDOW_SECONDS = env_int("LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60, minimum=1)
# Device cookies (accounts.limits): a browser that has logged in to an account gets a cookie that
# lasts LOGIN_DEVICE_COOKIE_DAYS; its attempts count against its own LOGIN_FAILURES_PER_DEVICE
# instead of the account's and the address's, so guessing from elsewhere cannot lock it out.
LOGIN_FAILURES_PER_DEVICE = env_int("LOGIN_FAILURES_PER_DEVICE", 5, minimum=1)
LOGIN_DEVICE_COOKIE_DAYS = env_int("LOGIN_DEVICE_COOKIE_DAYS", 90, minimum=1)

AUTHENTICATION_BACKENDS = ["accounts.backends.LimitedModelBackend"]

# Sign-in with identity providers (OpenID Connect): a JSON list of
# {"name", "issuer", "client_id", "client_secret"?, "provision": "auto"|"existing"|"off", "scopes"?,
#  "tenants"?, "policy"?}; `manage.py check` validates it (accounts.checks) and the README shows
# Entra ID, Entra External ID and B2C entries. Discovery documents are re-read every
# OIDC_DISCOVERY_SECONDS, key sets every OIDC_KEYS_SECONDS, and a token signed with an unknown
# key refetches the keys at most once per OIDC_KEY_REFRESH_SECONDS per provider.
OIDC_PROVIDERS: Any = env_json("OIDC_PROVIDERS", [])
OIDC_DISCOVERY_SECONDS = env_int("OIDC_DISCOVERY_SECONDS", 3600, minimum=1)
OIDC_KEYS_SECONDS = env_int("OIDC_KEYS_SECONDS", 3600, minimum=1)
OIDC_KEY_REFRESH_SECONDS = env_int("OIDC_KEY_REFRESH_SECONDS", 60, minimum=0)
OIDC_HTTP_TIMEOUT_SECONDS = env_int("OIDC_HTTP_TIMEOUT_SECONDS", 5, minimum=1)
# Clock skew allowed on the ID token's exp, iat and nbf.
OIDC_LEEWAY_SECONDS = env_int("OIDC_LEEWAY_SECONDS", 30, minimum=0)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "cortex-core",
    }
}

JWT_ISSUER = env_str("JWT_ISSUER", "cortex-core")
JWT_AUDIENCE = env_str("JWT_AUDIENCE", "cortex-clients")
ACCESS_TOKEN_MINUTES = env_int("ACCESS_TOKEN_MINUTES", 15, minimum=1)
# Seconds, when set, win over ACCESS_TOKEN_MINUTES (short-lived deployments, and the tests of
# streams ending with their token).
ACCESS_TOKEN_SECONDS = env_int("ACCESS_TOKEN_SECONDS", ACCESS_TOKEN_MINUTES * 60, minimum=1)

SIMPLE_JWT: dict[str, Any] = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=ACCESS_TOKEN_SECONDS),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("REFRESH_TOKEN_DAYS", 7, minimum=1)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "AUDIENCE": JWT_AUDIENCE,
    "ISSUER": JWT_ISSUER,
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "oid",
    "AUTH_HEADER_TYPES": ("Bearer",),
    "CHECK_REVOKE_TOKEN": True,
    "LEEWAY": 0,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Cortex Core API",
    "DESCRIPTION": "Input, configuration and live output for AI assistant clients.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SECURITY": [{"jwtAuth": []}],
    # Swagger UI from the pinned sidecar package, served by the app itself: /docs works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"validatorUrl": None},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "common.schema.add_error_envelope",
    ],
    # The streams are Channels consumers, not DRF views: documented here by hand.
    "APPEND_PATHS": {
        "/output/stream": {
            "get": {
                "operationId": "output_stream",
                "summary": "Live events as Server-Sent Events",
                "description": (
                    "`text/event-stream`: a `retry:` hint, then each event as `id: <id>` and `data: <event JSON>`"
                    " (no `event:` field), and `: ping` heartbeats. Resume with the `Last-Event-ID` header or"
                    ' `last_event_id`; a `{"type": "reset"}` event comes first when that id is past retention'
                    " or further back than `REPLAY_LIMIT_EVENTS` (default 10,000; then the stream starts at the head)."
                    " Authenticate with `Authorization: Bearer` or a `ticket` from `POST /output/ticket`"
                    " (browsers: the `cortex_stream` cookie that response sets also authenticates, so"
                    " EventSource's own reconnect works once the ticket is spent; such a stream ends when the"
                    " cookie expires)."
                    ' The stream ends with a final `data: {"type": "end", "reason": ...}` (no `id:`) when the'
                    " access token that opened it (or requested its ticket) expires (`token_expired`: reconnect with a"
                    " fresh token and `Last-Event-ID`, nothing is lost), or when its user is deactivated or deleted,"
                    " or logs out or changes the password after its credential was issued"
                    " (`revoked`, within 30 s). A client that stops reading is cut off once about 1 MB"
                    " (`STREAM_BUFFER_BYTES`) waits for it; it resumes with `Last-Event-ID`."
                    " Event types: `input`, and the assistant turns' (each with `data.turn_id`): `assistant.started`"
                    " (`input_id`), `assistant.delta` (`text`, batched), `tool.call` (`call_id`, `expert`, `tool`,"
                    " `arguments`), `tool.progress` (`call_id`, `progress`, `total`?, `message`?; at most 4 a second per"
                    " call), `tool.task` (`call_id`, `task_id`, `status`: a call the expert runs as a task),"
                    " `tool.result` (`call_id`, then `result` {`content`, `structured`, `blocks`} or `error`"
                    " {`code`, `message`}), and one of"
                    " `assistant.completed` (`message_id`, `content`), `assistant.failed` (`error` {`code`, `message`}),"
                    " `assistant.cancelled`."
                ),
                "tags": ["output"],
                "parameters": [
                    {"name": "conversation_id", "in": "query", "schema": {"type": "string", "format": "uuid"}},
                    {"name": "last_event_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "ticket", "in": "query", "schema": {"type": "string"}},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "The event stream", "content": {"text/event-stream": {}}},
                    "400": _error_response(400),
                    "401": _error_response(401),
                    "404": _error_response(404),
                    "429": {
                        **_error_response(429),
                        "description": "`too_many_streams`: the user already has `STREAMS_PER_USER` (default 10)"
                        " open streams (error envelope, `Retry-After`)",
                    },
                },
            }
        },
        "/.well-known/jwks.json": {
            "get": {
                "operationId": "expert_jwks",
                "summary": "Public keys of the tokens the core mints for experts",
                "description": (
                    "A JSON Web Key Set (Ed25519, `OKP`/`EdDSA`, each with its `kid`). Every call the core makes to an"
                    " expert registered with auth `core_token` carries `Authorization: Bearer <JWT>` minted for that"
                    " call: `iss` the core (`JWT_ISSUER`), `aud` the expert's URL, `sub` the user, `workspace_id`,"
                    " `tool` (`tools/list` for discovery), `iat`, `exp` (at most 5 minutes) and `jti`. Two keys may be"
                    " published at once (rotation): the first signs. No authentication; cacheable for 5 minutes."
                ),
                "tags": ["experts"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The key set",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "keys": {
                                            "type": "array",
                                            "items": {"type": "object", "additionalProperties": {"type": "string"}},
                                        }
                                    },
                                    "required": ["keys"],
                                }
                            }
                        },
                    }
                },
            }
        },
        "/output/ws": {
            "get": {
                "operationId": "output_websocket",
                "summary": "Live events over WebSocket",
                "description": (
                    "Upgrade to WebSocket: the same event JSON objects as text frames, `last_event_id` resume,"
                    " origin checked. Close code 1008 for failed auth, 1013 for a client that fell behind or a user"
                    " over `STREAMS_PER_USER` (after an error envelope frame), 1001 on server shutdown, 4401 when the"
                    " access token that opened it (or requested its ticket) expired and 4403 when its user was"
                    ' deactivated or deleted, or logged out or changed the password (each after a final `{"type": "end", "reason": "token_expired"|'
                    '"revoked"}` frame).'
                ),
                "tags": ["output"],
                "parameters": [
                    {"name": "last_event_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "ticket", "in": "query", "schema": {"type": "string"}},
                    {"name": "conversation_id", "in": "query", "schema": {"type": "string", "format": "uuid"}},
                ],
                "responses": {"101": {"description": "Switching protocols"}},
            }
        },
    },
}

# Channels: Redis when REDIS_URL is set (several core processes), else in-process memory.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    # Throttle counters must be shared by every process, or each one would allow the full rate.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, exactly channels_redis's
            # BZPOPMIN block time: idle consumers then crash with TimeoutError. Read longer.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}], "capacity": 1000, "expiry": 60},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "streaming.layers.ProcessChannelLayer"}}

# Product limits and knobs.
CORTEX: dict[str, Any] = {
    "MAX_CONTENT_CHARS": env_int("MAX_CONTENT_CHARS", 32_768, minimum=1),
    "MAX_METADATA_BYTES": env_int("MAX_METADATA_BYTES", 16 * 1024, minimum=2),
    "MAX_PARTICIPANTS": env_int("MAX_PARTICIPANTS", 100, minimum=1),
    "SSE_HEARTBEAT_SECONDS": env_int("SSE_HEARTBEAT_SECONDS", 15, minimum=1),
    "SSE_RETRY_MS": env_int("SSE_RETRY_MS", 3000, minimum=100),
    "STREAM_BUFFER_EVENTS": env_int("STREAM_BUFFER_EVENTS", 1000, minimum=1),
    # A connection whose unsent output passes this many bytes (a client that stopped reading) is
    # cut off; it resumes with Last-Event-ID.
    "STREAM_BUFFER_BYTES": env_int("STREAM_BUFFER_BYTES", 1024 * 1024, minimum=16 * 1024),
    # Open SSE + WebSocket streams per user (all processes sharing the cache); the next is a 429.
    "STREAMS_PER_USER": env_int("STREAMS_PER_USER", 10, minimum=1),
    # A resume further back than this many events gets {"type": "reset"} and starts at the head.
    "REPLAY_LIMIT_EVENTS": env_int("REPLAY_LIMIT_EVENTS", 10_000, minimum=1),
    # How often an open stream re-checks that its user is still active and has not logged out or
    # changed the password since its credential was issued (both also stop streams at once through
    # the channel layer; this is the bound if that message is lost).
    "STREAM_RECHECK_SECONDS": env_int("STREAM_RECHECK_SECONDS", 15, minimum=1),
    # With channels_redis's RedisChannelLayer: the streams' live copies go between the core processes
    # over Redis pub/sub (channels_redis's RedisPubSubChannelLayer, streaming.hub); 0: over the channel
    # layer's own queues (four round trips per receive, per message).
    "STREAM_REDIS_PUBSUB": env_bool("STREAM_REDIS_PUBSUB", True),
    "EVENT_RETENTION_HOURS": env_int("EVENT_RETENTION_HOURS", 24, minimum=1),
    "IDEMPOTENCY_HOURS": 24,
    "TICKET_SECONDS": env_int("TICKET_SECONDS", 30, minimum=1),
    # The browser's stream cookie (set by POST /output/ticket): EventSource reconnects with it.
    "STREAM_COOKIE_SECONDS": env_int("STREAM_COOKIE_SECONDS", 600, minimum=1),
    "WS_ALLOWED_ORIGINS": env_list("WS_ALLOWED_ORIGINS"),
    "MEMORY_URL": env_str("MEMORY_URL", "http://127.0.0.1:9000/mcp"),
    "COGNITION_URL": env_str("COGNITION_URL", "http://127.0.0.1:9100/mcp"),
    "SERVICE_TOKEN": env_str("CORTEX_SERVICE_TOKEN"),
    # Cognition's own credential: it calls memory with it and is called with it, and memory lets it
    # only read (search, history). Unset: the service token is used (`run_cortex` always sets one).
    "COGNITION_TOKEN": env_str("CORTEX_COGNITION_TOKEN"),
    # The turn worker's credential for `POST /internal/events` (live events to any user's streams,
    # accepted from loopback peers only); `run_cortex` makes a fresh one and gives it to the core and
    # the turn worker alone. Unset: the path answers 404 (with REDIS_URL it is not needed).
    "RELAY_TOKEN": env_str("CORTEX_RELAY_TOKEN"),
    # Prometheus's credential for `GET /metrics` (its own: no process of the group holds it). Unset: 404.
    "METRICS_TOKEN": env_str("CORTEX_METRICS_TOKEN"),
    # The input path: a user row is trusted this long per process (deactivation, deletion and
    # password changes take effect within it), and the writer commits up to this many inputs at once.
    "AUTH_USER_CACHE_SECONDS": env_int("AUTH_USER_CACHE_SECONDS", 5, minimum=0),
    "INPUT_BATCH_SIZE": env_int("INPUT_BATCH_SIZE", 256, minimum=1),
    "INPUT_GROUP_COMMIT": env_bool("INPUT_GROUP_COMMIT", True),
    # `POST /input`'s lean path (common.web.views.AsyncAPIView.lean): the common request (a JSON body,
    # a bearer token) validated by msgspec without DRF's request machinery; 0: DRF's path for every request.
    "INPUT_LEAN_PATH": env_bool("INPUT_LEAN_PATH", True),
    # ...and served from the ASGI scope (common.web.asgi.LeanRoutes), without Channels' router or
    # Django's request handling around the view; 0: through Django's handler (the lean path still runs).
    "INPUT_ASGI_ROUTE": env_bool("INPUT_ASGI_ROUTE", True),
    # SQLite: the input writer's WAL checkpoints run on their own thread this often (workspaces.writer),
    # not in the commit of the batch that fills the WAL; 0: SQLite's automatic checkpoint in that commit.
    "SQLITE_CHECKPOINT_MS": env_int("SQLITE_CHECKPOINT_MS", 1000, minimum=0),
    "SERVICE_TIMEOUT_SECONDS": env_int("SERVICE_TIMEOUT_SECONDS", 5, minimum=1),
    # /readyz: a result is reused this long, and no check is waited for longer than the timeout.
    "READYZ_CACHE_SECONDS": env_int("READYZ_CACHE_SECONDS", 5, minimum=0),
    "READYZ_TIMEOUT_SECONDS": env_int("READYZ_TIMEOUT_SECONDS", 3, minimum=1),
    # Extra Host names the MCP services answer to (beyond loopback) and browser origins they accept.
    "SERVICE_ALLOWED_HOSTS": env_list("SERVICE_ALLOWED_HOSTS"),
    "SERVICE_ALLOWED_ORIGINS": env_list("SERVICE_ALLOWED_ORIGINS"),
    "MEMORY_MAX_ITEM_BYTES": env_int("MEMORY_MAX_ITEM_BYTES", 256 * 1024, minimum=1024),
    "MEMORY_MAX_LIMIT": env_int("MEMORY_MAX_LIMIT", 1000, minimum=1),
    # Semantic memory: the embedder the memory service uses for items and queries. "wordllama"
    # (default): the model bundled in the wordllama wheel, offline, on CPU. "openai": an
    # OpenAI-compatible embeddings endpoint (EMBEDDINGS_URL, EMBEDDINGS_MODEL, EMBEDDINGS_API_KEY;
    # EMBEDDINGS_DIMENSIONS asks for shorter vectors where the model allows it). "off": keyword
    # search only. Changing it makes stored vectors stale: `manage.py memory_reindex` redoes them.
    "MEMORY_EMBEDDER": env_choice("MEMORY_EMBEDDER", "wordllama", ("wordllama", "openai", "off")),
    "EMBEDDINGS_URL": env_str("EMBEDDINGS_URL"),
    "EMBEDDINGS_MODEL": env_str("EMBEDDINGS_MODEL"),
    "EMBEDDINGS_API_KEY": env_str("EMBEDDINGS_API_KEY"),
    "EMBEDDINGS_DIMENSIONS": env_int("EMBEDDINGS_DIMENSIONS", 0, minimum=0),
    "EMBEDDINGS_TIMEOUT_SECONDS": env_int("EMBEDDINGS_TIMEOUT_SECONDS", 30, minimum=1),
    # Users' vectors the memory process keeps in memory for exact search (without pgvector), in MB
    # (100,000 items of 256 dimensions: about 100 MB).
    "MEMORY_VECTOR_CACHE_MB": env_int("MEMORY_VECTOR_CACHE_MB", 256, minimum=1),
    # JSON nesting accepted in request bodies and metadata (deeper: 400).
    "MAX_JSON_DEPTH": env_int("MAX_JSON_DEPTH", 32, minimum=2),
    "MEMORY_HISTORY_MAX_ITEMS": env_int("MEMORY_HISTORY_MAX_ITEMS", 10_000, minimum=1),
    # DELETE /account for an account without a password: the sign-in must be this recent.
    "ACCOUNT_ERASE_FRESH_SECONDS": env_int("ACCOUNT_ERASE_FRESH_SECONDS", 300, minimum=1),
    # Memory outbox: a drain is kicked after each commit (MEMORY_DRAIN_ON_COMMIT) and the
    # `memory_outbox_worker` retries what failed, backing off exponentially up to the maximum.
    "MEMORY_DRAIN_ON_COMMIT": env_bool("MEMORY_DRAIN_ON_COMMIT", True),
    # ... or, where a `memory_outbox_worker` runs beside the core (`run_cortex` sets it for its
    # group), each commit wakes the worker, which drains: none of a drain's work in the core.
    "MEMORY_DRAIN_BY_WORKER": env_bool("MEMORY_DRAIN_BY_WORKER", False),
    "OUTBOX_BATCH_SIZE": env_int("OUTBOX_BATCH_SIZE", 500, minimum=1),
    "OUTBOX_CONCURRENCY": env_int("OUTBOX_CONCURRENCY", 8, minimum=1),
    "OUTBOX_LEASE_SECONDS": env_int("OUTBOX_LEASE_SECONDS", 60, minimum=1),
    "OUTBOX_POLL_SECONDS": env_int("OUTBOX_POLL_SECONDS", 1, minimum=1),
    "OUTBOX_BACKOFF_BASE_SECONDS": env_int("OUTBOX_BACKOFF_BASE_SECONDS", 1, minimum=1),
    "OUTBOX_BACKOFF_MAX_SECONDS": env_int("OUTBOX_BACKOFF_MAX_SECONDS", 300, minimum=1),
    "OUTBOX_RETENTION_HOURS": env_int("OUTBOX_RETENTION_HOURS", 24, minimum=1),
    # An entry the memory service answers with an error this many times is marked failed (an
    # unreachable service is retried without limit).
    "OUTBOX_MAX_TOOL_ERRORS": env_int("OUTBOX_MAX_TOOL_ERRORS", 10, minimum=1),
    # Assistant turns (`manage.py turn_worker`): a turn still running after the time limit fails;
    # a worker holds each turn it runs by a lease it renews (a dead worker's turn is failed by
    # another once the lease expires); the worker looks for new turns and cancellations every
    # TURN_POLL_MS and runs up to TURN_CONCURRENCY turns at once.
    "TURN_TIME_LIMIT_SECONDS": env_int("TURN_TIME_LIMIT_SECONDS", 300, minimum=1),
    "TURN_LEASE_SECONDS": env_int("TURN_LEASE_SECONDS", 30, minimum=2),
    "TURN_POLL_MS": env_int("TURN_POLL_MS", 100, minimum=10),
    "TURN_CONCURRENCY": env_int("TURN_CONCURRENCY", 64, minimum=1),
    # Wake-ups (`turns.wakeups`): a write that makes a turn due wakes the workers at once; the poll
    # above is the fallback. auto: LISTEN/NOTIFY on PostgreSQL, else Redis pub/sub with REDIS_URL,
    # else a loopback datagram to the workers registered in TURN_WAKEUP_DIR; off: polling only.
    "TURN_WAKEUPS": env_choice("TURN_WAKEUPS", "auto", ("auto", "postgresql", "redis", "loopback", "off")),
    "TURN_WAKEUP_DIR": env_str("TURN_WAKEUP_DIR")
    or str(
        Path(DATABASES["default"]["NAME"]).with_name(Path(DATABASES["default"]["NAME"]).name + ".wake")
        if DATABASES["default"]["ENGINE"] == "common.db.sqlite"
        else BASE_DIR / "var" / "turn-wakeups"
    ),
    # Turns started by one user that run at once (across conversations and workers); the user's
    # further turns wait, so one user cannot take every slot of the workers.
    "TURN_MAX_RUNNING_PER_USER": env_int("TURN_MAX_RUNNING_PER_USER", 4, minimum=1),
    # Deltas: the first chunk of an answer is written at once, then text is coalesced for this
    # long or this many characters per event (a long answer is not thousands of rows).
    "TURN_DELTA_FLUSH_MS": env_int("TURN_DELTA_FLUSH_MS", 50, minimum=0),
    "TURN_DELTA_FLUSH_CHARS": env_int("TURN_DELTA_FLUSH_CHARS", 1024, minimum=1),
    # Model rounds that may end in tool calls; the round after the last is made without tools.
    "TURN_MAX_TOOL_ROUNDS": env_int("TURN_MAX_TOOL_ROUNDS", 5, minimum=0),
    "TURN_TOOL_TIMEOUT_SECONDS": env_int("TURN_TOOL_TIMEOUT_SECONDS", 30, minimum=1),
    "TURN_CONTEXT_ITEMS": env_int("TURN_CONTEXT_ITEMS", 10, minimum=0),
    "TURN_HISTORY_MESSAGES": env_int("TURN_HISTORY_MESSAGES", 20, minimum=0),
    # The inbox: an approval or question nobody answers expires after this long (the turn goes on,
    # told "denied"); a user has at most INBOX_MAX_OPEN_PER_USER open at once (past it a tool that
    # asks is refused as denied without asking); a question's message and schema are bounded.
    "TURN_APPROVAL_SECONDS": env_int("TURN_APPROVAL_SECONDS", 600, minimum=1),
    "INBOX_MAX_OPEN_PER_USER": env_int("INBOX_MAX_OPEN_PER_USER", 100, minimum=1),
    "INBOX_MESSAGE_MAX_CHARS": env_int("INBOX_MESSAGE_MAX_CHARS", 2000, minimum=1),
    "INBOX_SCHEMA_MAX_BYTES": env_int("INBOX_SCHEMA_MAX_BYTES", 16384, minimum=256),
    # The `echo` responder's pause between chunks (development and tests of long turns).
    "ECHO_DELAY_MS": env_int("ECHO_DELAY_MS", 0, minimum=0),
    # The `llm` responder: an OpenAI-compatible chat completions endpoint (the official SDK).
    "LLM_BASE_URL": env_str("CORTEX_LLM_BASE_URL"),
    "LLM_MODEL": env_str("CORTEX_LLM_MODEL"),
    "LLM_API_KEY": env_str("CORTEX_LLM_API_KEY"),
    "LLM_TIMEOUT_SECONDS": env_int("CORTEX_LLM_TIMEOUT_SECONDS", 60, minimum=1),
    # The model accepts images: a tool result's inline images reach it as image parts too.
    "LLM_VISION": env_bool("CORTEX_LLM_VISION", False),
    # Budgets: each person's monthly model tokens (input + output, calendar month in UTC) unless the
    # admin sets their own (`usage.UserBudget`); 0: no budget. Workspaces have their owner's setting.
    "USER_MONTHLY_TOKENS": env_int("USER_MONTHLY_TOKENS", 0, minimum=0),
    # The audit log's entries are pruned by housekeeping after this many days.
    "AUDIT_RETENTION_DAYS": env_int("AUDIT_RETENTION_DAYS", 365, minimum=1),
    # Refused attempts (failed sign-ins) are audited by a writer thread within about a second, in
    # batches, so that a flood of them never waits for (nor holds) the database's write lock.
    "AUDIT_WRITE_BEHIND": env_bool("AUDIT_WRITE_BEHIND", True),
    # Where a turn worker relays committed events to the core's streams when there is no Redis
    # (`run_cortex` sets it); with REDIS_URL the channel layer carries them.
    "CORE_URL": env_str("CORTEX_CORE_URL"),
}

# Experts (per-workspace MCP servers the core calls on a user's behalf; mcp_services.experts).
# Hosts the core may call: host names, IP addresses or networks (CIDR), each with an optional port
# (`notes.internal:9200`, `[::1]:9200`, `10.0.8.0/24:*`); without one, ports 80 and 443 only. A URL
# whose host and port are not listed is refused (400) at registration, and again at call time, when
# the name is resolved and every address must be listed (with the port) or public. Loopback in
# debug, on 80, 443 and the shipped notes expert's 9200; empty (no expert can be registered)
# otherwise, so production lists its expert hosts explicitly.
_LOOPBACK_EXPERTS = ["localhost", "127.0.0.1", "[::1]"]
EXPERT_ALLOWED_HOSTS = env_list(
    "EXPERT_ALLOWED_HOSTS", [*_LOOPBACK_EXPERTS, *(f"{host}:9200" for host in _LOOPBACK_EXPERTS)] if DEBUG else []
)
# Keys that sign the per-call tokens sent to experts (Ed25519 PEM private keys): file paths or PEM
# text, comma-separated; the first signs, all are published at /.well-known/jwks.json (rotation).
# Unset in debug: one key is generated and kept in var/. Unset otherwise: `core_token` experts
# cannot be called (`manage.py check` warns, and the call fails with service_unavailable).
EXPERT_SIGNING_KEYS = env_list("EXPERT_SIGNING_KEYS")
EXPERT_DEBUG_KEY_PATH = BASE_DIR / "var" / "expert-signing-key.pem"
EXPERT_TOKEN_SECONDS = env_int("EXPERT_TOKEN_SECONDS", 120, minimum=1)
if EXPERT_TOKEN_SECONDS > 300:
    raise ImproperlyConfigured("EXPERT_TOKEN_SECONDS must be at most 300 (tokens for experts live 5 minutes at most).")
# Cached tool lists: the server's `ttlMs` hint, kept within these bounds (seconds).
EXPERT_TOOLS_MIN_TTL_SECONDS = env_int("EXPERT_TOOLS_MIN_TTL_SECONDS", 60, minimum=0)
EXPERT_TOOLS_MAX_TTL_SECONDS = env_int("EXPERT_TOOLS_MAX_TTL_SECONDS", 24 * 3600, minimum=1)
# A discovery (tools/list, which registering and refreshing wait for) takes at most this long, and
# at most EXPERT_DISCOVERY_CONCURRENCY run at once per process; one that finds no free slot within
# the timeout is a 503 (the request waits at most twice the timeout in all).
EXPERT_DISCOVERY_TIMEOUT_SECONDS = env_int("EXPERT_DISCOVERY_TIMEOUT_SECONDS", 5, minimum=1)
EXPERT_DISCOVERY_CONCURRENCY = env_int("EXPERT_DISCOVERY_CONCURRENCY", 4, minimum=1)
# The largest tool result (its text plus its structured content, as JSON) the core accepts from an
# expert: a larger one is refused (payload_too_large), never written into every participant's log.
# It also bounds what one call or discovery reads, as it streams: 4 x this + 64 KiB (1.1 MB).
EXPERT_RESULT_MAX_BYTES = env_int("EXPERT_RESULT_MAX_BYTES", 256 * 1024, minimum=1024)
# Experts behind each person's own OAuth account (`auth: "oauth"`, the `connections` app).
# OAUTH_TOKEN_KEYS: Fernet keys (comma-separated; the first encrypts, all decrypt: rotation) for the
# tokens and client secrets at rest; debug derives one from SECRET_KEY, production has no default.
OAUTH_TOKEN_KEYS = env_list("OAUTH_TOKEN_KEYS")
# The core's public address (the redirect URI is <it>/oauth/callback) and, when the client ID
# metadata document is hosted elsewhere or behind a proxy, that document's public URL (the client id).
OAUTH_PUBLIC_URL = env_str("OAUTH_PUBLIC_URL", "http://127.0.0.1:8000") or "http://127.0.0.1:8000"
OAUTH_CLIENT_METADATA_URL = env_str("OAUTH_CLIENT_METADATA_URL") or ""
# An access token is refreshed when it expires within the margin plus a random jitter (seconds).
OAUTH_REFRESH_MARGIN_SECONDS = env_int("OAUTH_REFRESH_MARGIN_SECONDS", 60, minimum=0)
OAUTH_REFRESH_JITTER_SECONDS = env_int("OAUTH_REFRESH_JITTER_SECONDS", 30, minimum=0)

# A result's images, audio and embedded binary resources are kept inline (base64, in `tool.result`'s
# `blocks`) up to this many decoded bytes each, and while all of them together stay within
# EXPERT_RESULT_MAX_BYTES; past either they are `omitted` with their size. At most
# EXPERT_RESULT_MAX_BLOCKS non-text blocks are kept (the rest are counted, not shown).
EXPERT_INLINE_BLOB_BYTES = env_int("EXPERT_INLINE_BLOB_BYTES", 256 * 1024, minimum=0)
EXPERT_RESULT_MAX_BLOCKS = env_int("EXPERT_RESULT_MAX_BLOCKS", 64, minimum=0)
# A tool called as a task may run this long (its waiting, between polls, does not count against
# the turn's own TURN_TIME_LIMIT_SECONDS); past it the task is cancelled and the call fails (timeout).
EXPERT_TASK_MAX_SECONDS = env_int("EXPERT_TASK_MAX_SECONDS", 3600, minimum=1)
# The notes expert (`manage.py run_notes_expert`): where it fetches the core's public keys.
NOTES_JWKS_URL = env_str("NOTES_JWKS_URL", "http://127.0.0.1:8000/.well-known/jwks.json")

# Schedules (`schedules`): 5-field cron in the owner's IANA timezone. At most SCHEDULES_PER_USER per
# person and no two runs closer than SCHEDULE_MIN_INTERVAL_SECONDS; a run missed while nothing was
# running happens once when at most SCHEDULE_CATCHUP_SECONDS late, else `schedule.skipped`. Due
# schedules are claimed by the turn workers at their due time (they sleep until the earliest one; a
# schedule made or changed wakes them) and by housekeeping; SCHEDULE_POLL_MS is the fallback poll.
SCHEDULES_PER_USER = env_int("SCHEDULES_PER_USER", 50, minimum=0)
SCHEDULE_MIN_INTERVAL_SECONDS = env_int("SCHEDULE_MIN_INTERVAL_SECONDS", 300, minimum=60)
SCHEDULE_CATCHUP_SECONDS = env_int("SCHEDULE_CATCHUP_SECONDS", 3600, minimum=0)
SCHEDULE_POLL_MS = env_int("SCHEDULE_POLL_MS", 1000, minimum=10)

# Webhooks (`webhooks`): the hosts they may target, as EXPERT_ALLOWED_HOSTS (same syntax, same
# checks at registration and at every connection); `https` outside debug, except on loopback.
# Empty outside debug: production lists its receivers explicitly.
WEBHOOK_ALLOWED_HOSTS = env_list("WEBHOOK_ALLOWED_HOSTS", ["localhost:*", "127.0.0.1:*", "[::1]:*"] if DEBUG else [])
WEBHOOKS_PER_USER = env_int("WEBHOOKS_PER_USER", 20, minimum=0)
# One attempt waits at most this long for an answer (and reads at most 64 KiB of it).
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
# Retries: BASE x 2^(attempt-1), at most MAX, each with +-20 % jitter, until the delivery is
# WEBHOOK_RETRY_SECONDS old (about a day), then `failed`. A webhook all of whose attempts failed
# for WEBHOOK_DISABLE_AFTER_DAYS is deactivated.
WEBHOOK_BACKOFF_BASE_MS = env_int("WEBHOOK_BACKOFF_BASE_MS", 5000, minimum=1)
WEBHOOK_BACKOFF_MAX_SECONDS = env_int("WEBHOOK_BACKOFF_MAX_SECONDS", 4 * 3600, minimum=1)
WEBHOOK_RETRY_SECONDS = env_int("WEBHOOK_RETRY_SECONDS", 26 * 3600, minimum=1)
WEBHOOK_DISABLE_AFTER_DAYS = env_int("WEBHOOK_DISABLE_AFTER_DAYS", 5, minimum=1)
# The delivery worker: at most WEBHOOK_CONCURRENCY requests at once, one per webhook (its deliveries
# go in log order), each webhook at most WEBHOOK_MAX_PER_SECOND; it looks for due work every
# WEBHOOK_POLL_MS. A webhook is leased to one worker for the timeout plus WEBHOOK_LEASE_EXTRA_SECONDS.
WEBHOOK_CONCURRENCY = env_int("WEBHOOK_CONCURRENCY", 32, minimum=1)
WEBHOOK_MAX_PER_SECOND = env_int("WEBHOOK_MAX_PER_SECOND", 20, minimum=1)
WEBHOOK_POLL_MS = env_int("WEBHOOK_POLL_MS", 250, minimum=10)
WEBHOOK_LEASE_EXTRA_SECONDS = env_int("WEBHOOK_LEASE_EXTRA_SECONDS", 30, minimum=1)
# A lease takes up to WEBHOOK_BATCH of a webhook's pending deliveries (sent in order, one at a time).
WEBHOOK_BATCH = env_int("WEBHOOK_BATCH", 10, minimum=1)

# LOG_FORMAT=json: one JSON object per line, each with the request id (common.logs).
LOG_FORMAT = env_str("LOG_FORMAT") or "plain"
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
# One `cortex.access` line per request (about 50 to 100 us each; ACCESS_LOG=0 for benchmarks).
ACCESS_LOG = env_bool("ACCESS_LOG", True)
LOGGING = logging_config(log_format=LOG_FORMAT, level=env_str("LOG_LEVEL") or "INFO")
