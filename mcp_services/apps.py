from django.apps import AppConfig


class McpServicesConfig(AppConfig):
    name = "mcp_services"
    verbose_name = "Memory and cognition services"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.checks import register

        from mcp_services.experts import checks
        from mcp_services.outbox import metrics, receivers  # noqa: F401 - connects the workspaces hooks

        metrics.register()
        register(checks.signing_keys_check)
        register(checks.allowed_hosts_check)
        checks.warn_at_startup()
