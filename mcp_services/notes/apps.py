from django.apps import AppConfig


class NotesConfig(AppConfig):
    name = "mcp_services.notes"
    label = "notes"
    verbose_name = "Notes expert"
    default_auto_field = "django.db.models.BigAutoField"
