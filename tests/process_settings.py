"""The settings of every process the tests start (`tests.servers.server_env`): the real settings,
production mode, with one change: new passwords are hashed with MD5, as the in-process tests do
(conftest.py). PBKDF2 at Django's 1,500,000 iterations costs about half a second of CPU per login
and per user created, and the suite's processes do hundreds of each; the production hashers stay
listed, so a password hashed by a process on the real settings still verifies. Never used outside
the tests: production runs `cortex_site.settings`."""

from django.conf import global_settings

from cortex_site.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *global_settings.PASSWORD_HASHERS]
