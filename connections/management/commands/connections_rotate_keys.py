"""`manage.py connections_rotate_keys`: re-encrypt every stored token, client secret and PKCE
verifier with the first of OAUTH_TOKEN_KEYS (after a new key was put first; then the old one can go)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from connections import crypto
from connections.models import Connection, OAuthClient, PendingFlow


class Command(BaseCommand):
    help = "Re-encrypt connected accounts' secrets with the first OAUTH_TOKEN_KEYS key."

    def handle(self, *args: Any, **options: Any) -> None:
        count = 0
        with transaction.atomic():
            for connection in Connection.objects.select_for_update():
                connection.access_token = crypto.reseal(connection.access_token)
                connection.refresh_token = crypto.reseal(connection.refresh_token)
                connection.save(update_fields=["access_token", "refresh_token"])
                count += 1
            for client in OAuthClient.objects.select_for_update():
                client.client_secret = crypto.reseal(client.client_secret)
                client.save(update_fields=["client_secret"])
                count += 1
            for flow in PendingFlow.objects.select_for_update():
                flow.verifier = crypto.reseal(flow.verifier)
                flow.save(update_fields=["verifier"])
                count += 1
        self.stdout.write(f"re-encrypted {count} rows")
