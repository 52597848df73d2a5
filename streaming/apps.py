from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from streaming.receivers import (
            on_messages_created,
            on_participants_changed,
            on_user_deleted,
            on_user_saved,
            on_user_saved_revoke,
        )
        from workspaces.models import Conversation
        from workspaces.signals import messages_created

        messages_created.connect(on_messages_created, dispatch_uid="streaming.events_record_for_messages")
        post_save.connect(on_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="streaming.cursor_create")
        # Access ends with the user: deactivation or deletion ends their streams (any path).
        post_save.connect(on_user_saved_revoke, sender=settings.AUTH_USER_MODEL, dispatch_uid="streaming.revoke")
        post_delete.connect(on_user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="streaming.revoke_deleted")
        m2m_changed.connect(
            on_participants_changed, sender=Conversation.participants.through, dispatch_uid="streaming.participants"
        )
