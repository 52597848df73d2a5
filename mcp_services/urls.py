from django.urls import path

from mcp_services import views
from mcp_services.experts import views as experts

urlpatterns = [
    path("context", views.ContextApi.as_view(), name="context"),
    path("config/workspace/<str:workspace_id>/experts", experts.ExpertListCreateApi.as_view(), name="expert-list"),
    path(
        "config/workspace/<str:workspace_id>/experts/<str:expert_id>",
        experts.ExpertDetailApi.as_view(),
        name="expert-detail",
    ),
    path(
        "config/workspace/<str:workspace_id>/experts/<str:expert_id>/refresh",
        experts.ExpertRefreshApi.as_view(),
        name="expert-refresh",
    ),
    path(".well-known/jwks.json", experts.jwks, name="jwks"),
]
