from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save, pre_delete

        from accounts import checks  # noqa: F401  (registers the OIDC_PROVIDERS check)
        from accounts.receivers import forget_user, identity_unlinking

        post_save.connect(forget_user, sender=self.get_model("User"), dispatch_uid="accounts.forget_user")
        post_delete.connect(forget_user, sender=self.get_model("User"), dispatch_uid="accounts.forget_user_deleted")
        pre_delete.connect(
            identity_unlinking, sender=self.get_model("ExternalIdentity"), dispatch_uid="accounts.identity_unlinking"
        )
