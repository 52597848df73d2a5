from django.urls import path

from schedules import views

urlpatterns = [
    path("schedules", views.ScheduleListApi.as_view(), name="schedules"),
    path("schedules/<str:schedule_id>", views.ScheduleDetailApi.as_view(), name="schedule"),
    path("schedules/<str:schedule_id>/run", views.ScheduleRunApi.as_view(), name="schedule-run"),
]
