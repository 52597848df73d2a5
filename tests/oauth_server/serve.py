"""`python -m tests.oauth_server.serve <port>`: migrate the server's own SQLite database, make the
resource server's introspection client (AS_RS_CLIENT_ID / AS_RS_CLIENT_SECRET), and serve."""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oauth_server.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from oauth2_provider.models import Application  # noqa: E402

call_command("migrate", verbosity=0)
if not Application.objects.filter(client_id=os.environ["AS_RS_CLIENT_ID"]).exists():
    Application.objects.create(
        name="resource server",
        client_id=os.environ["AS_RS_CLIENT_ID"],
        client_secret=os.environ["AS_RS_CLIENT_SECRET"],
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
call_command("runserver", f"127.0.0.1:{sys.argv[1]}", use_reloader=False, use_threading=True, skip_checks=True)
