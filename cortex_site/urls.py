from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from accounts.oidc_views import admin_oidc_complete
from common.metrics import metrics_view
from operations import health

# The apps' `admin` modules register their models here, where the admin is served, not at every
# process's start (common.admin.AdminConfig).
admin.autodiscover()

urlpatterns = [
    # The input path first: Django tries patterns in order on every request.
    path("", include("workspaces.urls")),
    path("", health.root, name="root"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("auth/", include("accounts.urls")),
    path("", include("mcp_services.urls")),
    path("", include("streaming.urls")),
    path("", include("turns.urls")),
    path("", include("connections.urls")),
    path("", include("account_data.urls")),
    path("", include("schedules.urls")),
    path("", include("webhooks.urls")),
    path("", include("usage.urls")),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("admin/oidc/complete", admin_oidc_complete, name="admin-oidc-complete"),
    path("console/", include("console.urls")),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "common.web.handlers.bad_request"
handler403 = "common.web.handlers.permission_denied"
handler404 = "common.web.handlers.page_not_found"
handler500 = "common.web.handlers.server_error"
