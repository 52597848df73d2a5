from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import post_save

        from streaming.receivers import on_messages_created, on_user_saved
        from workspaces.signals import messages_created

        messages_created.connect(on_messages_created, dispatch_uid="streaming.events_record_for_messages")
        post_save.connect(on_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="streaming.cursor_create")
