from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts.signals import user_deleting
        from workspaces import services

        def on_user_deleting(sender, *, user, **kwargs) -> None:
            services.workspaces_delete_for_owner(owner=user)

        user_deleting.connect(on_user_deleting, dispatch_uid="workspaces.delete_for_owner", weak=False)
