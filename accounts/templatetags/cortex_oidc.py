from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from accounts.oidc import providers
from accounts.oidc_views import admin_login_url, same_origin_path

register = template.Library()


@register.simple_tag(takes_context=True)
def oidc_admin_providers(context: Any) -> list[dict[str, str]]:
    """The admin login page's "sign in with" links, keeping the page's `next`."""
    request = context.get("request")
    next_path = request.GET.get("next", "") if request is not None else ""
    if not same_origin_path(next_path):
        next_path = reverse("admin:index")
    return [{"name": provider.name, "url": admin_login_url(provider, next_path)} for provider in providers().values()]
