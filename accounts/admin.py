from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.models import ExternalIdentity, RefreshTokenFamily, User
from accounts.services import user_delete
from common.admin import ReadOnlyAdmin


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name")


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class ExternalIdentityInline(admin.TabularInline):
    """A user's identity-provider accounts; deleting one unlinks it (its logins are revoked)."""

    model = ExternalIdentity
    extra = 0
    fields = ("provider", "issuer", "subject", "email", "created_at", "last_login")
    readonly_fields = fields
    can_delete = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    inlines = [ExternalIdentityInline]
    add_form = UserCreationForm
    form = UserEditForm
    list_display = ("email", "name", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff", "is_superuser", "date_joined")
    search_fields = ("email", "name", "id")
    ordering = ("email",)
    readonly_fields = ("id", "date_joined", "last_login")
    fieldsets = (
        (None, {"fields": ("id", "email", "password")}),
        ("Profile", {"fields": ("name", "metadata")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "name", "password1", "password2")}),)

    # As the API would: their workspaces, events and memory go too, and their streams end.
    def delete_model(self, request, obj: User) -> None:
        user_delete(user=obj)

    def delete_queryset(self, request, queryset) -> None:
        for user in queryset:
            user_delete(user=user)


# The admin login goes through `accounts.backends.LimitedModelBackend` like the API; a refused
# attempt is answered 429 with Retry-After instead of the form's 200.
_admin_login = admin.site.login


def _limited_admin_login(request, extra_context=None):
    response = _admin_login(request, extra_context)
    retry_after = getattr(request, "login_retry_after", None)
    if retry_after is not None:
        response.status_code = 429
        response["Retry-After"] = str(retry_after)
    return response


admin.site.login = _limited_admin_login  # type: ignore[method-assign]


# simplejwt's token admin shows each outstanding refresh token whole to any staff user who may view
# it. Ours stores none (accounts.tokens) and shows only the jti, user and dates of older rows too.
for _model in (OutstandingToken, BlacklistedToken):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


@admin.register(OutstandingToken)
class OutstandingTokenAdmin(ReadOnlyAdmin):
    list_display = ("jti", "user", "created_at", "expires_at")
    search_fields = ("user__email", "jti")
    fields = ("jti", "user", "created_at", "expires_at")
    readonly_fields = fields
    ordering = ("-created_at",)
    list_select_related = ("user",)


@admin.register(BlacklistedToken)
class BlacklistedTokenAdmin(ReadOnlyAdmin):
    list_display = ("token", "blacklisted_at")
    fields = ("token", "blacklisted_at")
    readonly_fields = fields
    list_select_related = ("token__user",)


@admin.register(RefreshTokenFamily)
class RefreshTokenFamilyAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "created_at", "revoked_at")
    search_fields = ("user__email", "=id")
    readonly_fields = ("id", "user", "created_at", "revoked_at")
    list_select_related = ("user",)
    actions = ["revoke"]

    @admin.action(description="Revoke (every refresh token of these logins)")
    def revoke(self, request, queryset) -> None:
        from accounts.services import refresh_family_revoke

        for family_id in queryset.filter(revoked_at__isnull=True).values_list("id", flat=True):
            refresh_family_revoke(family_id=family_id)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return request.method in ("GET", "HEAD") and super().has_change_permission(request, obj)


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(admin.ModelAdmin):
    """Links made by sign-ins, or by an operator (say, a staff user's identity before their first
    admin sign-in: the provider's `iss` and the user's `sub`). Deleting one revokes its logins."""

    list_display = ("user", "provider", "subject", "email", "created_at", "last_login")
    list_filter = ("provider",)
    search_fields = ("user__email", "email", "=subject")
    readonly_fields = ("created_at", "last_login")
    raw_id_fields = ("user",)
    list_select_related = ("user",)


# The admin login page also offers the identity providers (linked staff users only get in).
admin.site.login_template = "admin/cortex_login.html"
