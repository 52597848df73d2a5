from django.urls import path

from turns import views

urlpatterns = [
    path("turns/<str:turn_id>", views.TurnDetailApi.as_view(), name="turn-detail"),
    path("turns/<str:turn_id>/cancel", views.TurnCancelApi.as_view(), name="turn-cancel"),
]
