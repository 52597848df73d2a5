from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"
    verbose_name = "Connected accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from connections import receivers  # noqa: F401 - erasure, leaving, deletion, connect answers
        from connections.broker import OAuthBroker
        from mcp_services.experts.credentials import broker_set

        broker_set(OAuthBroker())
