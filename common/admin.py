"""Admin pieces shared by the apps."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import SimpleAdminConfig
from django.contrib.admin.checks import check_admin_app, check_dependencies
from django.core import checks


class AdminConfig(SimpleAdminConfig):
    """`django.contrib.admin` (INSTALLED_APPS), with the apps' `admin` modules imported where the
    admin is used, not by every Django process at start: by the URLconf that serves it
    (`cortex_site.urls` calls `admin.autodiscover()`) and by its system checks. Django's own
    AdminConfig imports them in `ready()`, and with them what they import (the services of every app:
    the OAuth client, DRF, the metrics): about a third of a `manage.py` command's start-up, paid by
    the memory and cognition services and the workers, which serve no admin."""

    def ready(self) -> None:
        checks.register(check_dependencies, checks.Tags.admin)
        checks.register(_check_admin_app, checks.Tags.admin)


def _check_admin_app(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """Django's checks of the registered ModelAdmins, once they are registered."""
    admin.autodiscover()
    return check_admin_app(app_configs, **kwargs)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown to staff, changed by nobody (superusers included): rows that the app's own services
    write, such as token tables, running totals or the audit log."""

    actions = None

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
