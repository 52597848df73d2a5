from django.urls import path

from accounts import oidc_views, views

urlpatterns = [
    path("login", views.LoginApi.as_view(), name="auth-login"),
    path("refresh", views.RefreshApi.as_view(), name="auth-refresh"),
    path("logout", views.LogoutApi.as_view(), name="auth-logout"),
    path("verify", views.VerifyApi.as_view(), name="auth-verify"),
    path("providers", oidc_views.ProvidersApi.as_view(), name="auth-providers"),
    path("exchange", oidc_views.ExchangeApi.as_view(), name="auth-exchange"),
    path("login-code", oidc_views.LoginCodeApi.as_view(), name="auth-login-code"),
    path("oidc/<str:provider>/login", oidc_views.OidcLoginApi.as_view(), name="auth-oidc-login"),
    path("oidc/<str:provider>/callback", oidc_views.OidcCallbackApi.as_view(), name="auth-oidc-callback"),
]
