from django.urls import path

from account_data import views

urlpatterns = [
    path("memory", views.MemoryListApi.as_view(), name="memory-list"),
    path("memory/<str:item_id>", views.MemoryDetailApi.as_view(), name="memory-detail"),
    path("account", views.AccountApi.as_view(), name="account"),
    path("account/audit", views.AccountAuditApi.as_view(), name="account-audit"),
    path("account/export", views.AccountExportApi.as_view(), name="account-export"),
]
