from django.urls import path

from workspaces import views

urlpatterns = [
    path("input", views.InputApi.as_view(), name="input"),  # first: the hot path
    path("config/workspace", views.WorkspaceListCreateApi.as_view(), name="workspace-list"),
    path("config/workspace/<str:workspace_id>", views.WorkspaceDetailApi.as_view(), name="workspace-detail"),
    path("config/conversation", views.ConversationListCreateApi.as_view(), name="conversation-list"),
    path(
        "config/conversation/<str:conversation_id>",
        views.ConversationDetailApi.as_view(),
        name="conversation-detail",
    ),
    path("messages", views.MessageListApi.as_view(), name="messages"),
]
