from django.apps import AppConfig


class TurnsConfig(AppConfig):
    name = "turns"
    verbose_name = "Assistant turns"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from turns import receivers  # noqa: F401 - connects the workspaces hook
