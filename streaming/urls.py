from django.urls import path

from streaming import views

urlpatterns = [
    path("output/ticket", views.TicketApi.as_view(), name="output-ticket"),
    path("internal/events", views.internal_events, name="internal-events"),
]
