from django.apps import AppConfig


class McpServicesConfig(AppConfig):
    name = "mcp_services"
    default_auto_field = "django.db.models.BigAutoField"
