from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from streaming.receivers import on_message_created
        from workspaces.signals import message_created

        message_created.connect(on_message_created, dispatch_uid="streaming.events_record_for_message")
