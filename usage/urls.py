from django.urls import path

from usage import views

urlpatterns = [
    path("usage", views.UsageApi.as_view(), name="usage"),
]
