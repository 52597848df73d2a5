from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from cortex_site import health

urlpatterns = [
    # The input path first: Django tries patterns in order on every request.
    path("", include("workspaces.urls")),
    path("", health.root, name="root"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("auth/", include("accounts.urls")),
    path("", include("mcp_services.urls")),
    path("", include("streaming.urls")),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("admin/", admin.site.urls),
]

handler400 = "cortex_site.errors.bad_request"
handler403 = "cortex_site.errors.permission_denied"
handler404 = "cortex_site.errors.page_not_found"
handler500 = "cortex_site.errors.server_error"
