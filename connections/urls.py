from django.urls import path

from connections import views

urlpatterns = [
    path("connections", views.ConnectionListApi.as_view(), name="connection-list"),
    path("connections/<str:expert_id>", views.ConnectionDetailApi.as_view(), name="connection-detail"),
    path("oauth/callback", views.callback, name="oauth-callback"),
    path(".well-known/oauth-client.json", views.client_metadata, name="oauth-client-metadata"),
]
