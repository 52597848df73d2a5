from django.urls import path

from turns import views
from turns.inbox import views as inbox

urlpatterns = [
    path("turns/<str:turn_id>", views.TurnDetailApi.as_view(), name="turn-detail"),
    path("turns/<str:turn_id>/cancel", views.TurnCancelApi.as_view(), name="turn-cancel"),
    path("inbox", inbox.InboxListApi.as_view(), name="inbox"),
    path("inbox/<str:request_id>/answer", inbox.InboxAnswerApi.as_view(), name="inbox-answer"),
]
