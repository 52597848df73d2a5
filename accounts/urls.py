from django.urls import path

from accounts import views

urlpatterns = [
    path("login", views.LoginApi.as_view(), name="auth-login"),
    path("refresh", views.RefreshApi.as_view(), name="auth-refresh"),
    path("logout", views.LogoutApi.as_view(), name="auth-logout"),
    path("verify", views.VerifyApi.as_view(), name="auth-verify"),
]
