"""Loaded with `-p tests.environment` before Django is configured: the suite runs the real
settings module, in production mode (DEBUG off), with throwaway keys."""

import os
import tempfile

os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("JWT_SIGNING_KEY", "test-jwt-signing-key-0123456789-abcdefghijklmnopqrstuv")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("CORTEX_SERVICE_TOKEN", "test-service-token-0123456789")
os.environ.setdefault("CORTEX_COGNITION_TOKEN", "test-cognition-token-0123456789")
os.environ.setdefault("SECURE_COOKIES", "0")
# In-process tests drive the memory outbox themselves: the core's drain thread would race them and
# outlive their databases. End-to-end servers that need it turn it back on explicitly.
os.environ.setdefault("MEMORY_DRAIN_ON_COMMIT", "0")
# The test database is created next to this file; end-to-end servers get their own files.
os.environ.setdefault("SQLITE_PATH", os.path.join(tempfile.gettempdir(), f"cortex-test-{os.getpid()}.sqlite3"))
