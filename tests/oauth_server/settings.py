"""A real OAuth 2.1 authorization server for the tests: django-oauth-toolkit in its own process
(`tests/oauth_server/serve.py`), with PKCE required, rotating refresh tokens whose reuse revokes
the whole grant, dynamic registration, client ID metadata documents and RFC 8414 metadata."""

import os

SECRET_KEY = "test-authorization-server-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tests.oauth_server.views.TestLogin",
    "tests.oauth_server.views.ClientMetadataDocuments",
    "tests.oauth_server.views.Counting",
]
ROOT_URLCONF = "tests.oauth_server.views"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["AS_DB"],
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/login/"
OAUTH2_PROVIDER = {
    "PKCE_REQUIRED": True,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("AS_TOKEN_SECONDS", "3600")),
    "SCOPES": {"tickets:read": "Read tickets", "tickets:write": "Write tickets", "introspection": "Introspect"},
    "DEFAULT_SCOPES": ["tickets:read"],
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    "REQUEST_APPROVAL_PROMPT": "auto",
}
# Client secrets are hashed with Django's password hashers: PBKDF2's deliberate cost per token
# request would make this test server, not the core, the bottleneck on a loaded machine.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False}
