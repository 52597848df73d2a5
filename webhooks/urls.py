from django.urls import path

from webhooks import views

urlpatterns = [
    path("webhooks", views.WebhookListApi.as_view(), name="webhooks"),
    path("webhooks/<str:webhook_id>", views.WebhookDetailApi.as_view(), name="webhook"),
    path("webhooks/<str:webhook_id>/rotate-secret", views.WebhookRotateSecretApi.as_view(), name="webhook-rotate"),
    path("webhooks/<str:webhook_id>/deliveries", views.DeliveryListApi.as_view(), name="webhook-deliveries"),
    path(
        "webhooks/<str:webhook_id>/deliveries/<str:delivery_id>/retry",
        views.DeliveryRetryApi.as_view(),
        name="webhook-delivery-retry",
    ),
]
