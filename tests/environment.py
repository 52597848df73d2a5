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
os.environ.setdefault("CORTEX_RELAY_TOKEN", "test-relay-token-0123456789")
os.environ.setdefault("CORTEX_METRICS_TOKEN", "test-metrics-token-0123456789")
os.environ.setdefault("SECURE_COOKIES", "0")
# In-process tests drive the memory outbox themselves: the core's drain thread would race them and
# outlive their databases. End-to-end servers that need it turn it back on explicitly.
os.environ.setdefault("MEMORY_DRAIN_ON_COMMIT", "0")
# The test database is created next to this file; end-to-end servers get their own files.
os.environ.setdefault("SQLITE_PATH", os.path.join(tempfile.gettempdir(), f"cortex-test-{os.getpid()}.sqlite3"))

# Two expert signing keys (rotation: the first signs, both are published), shared with every
# server process the tests start; experts may be registered on loopback by address only.
if "EXPERT_SIGNING_KEYS" not in os.environ:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _key_dir = tempfile.mkdtemp(prefix="cortex-test-keys-")
    _paths = []
    for _index in range(2):
        _path = os.path.join(_key_dir, f"expert-{_index}.pem")
        with open(_path, "wb") as _file:
            _file.write(
                Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        _paths.append(_path)
    os.environ["EXPERT_SIGNING_KEYS"] = ",".join(_paths)
# Test experts listen on free ports: any port of 127.0.0.1 (production entries name their ports).
os.environ.setdefault("EXPERT_ALLOWED_HOSTS", "127.0.0.1:*")
# Two keys for tokens at rest (rotation: the first encrypts, both decrypt).
if "OAUTH_TOKEN_KEYS" not in os.environ:
    from cryptography.fernet import Fernet

    os.environ["OAUTH_TOKEN_KEYS"] = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
