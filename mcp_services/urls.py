from django.urls import path

from mcp_services import views

urlpatterns = [
    path("context", views.ContextApi.as_view(), name="context"),
]
