from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from finops import views

urlpatterns = [
    path("admin/reports/", include("apps.reports.admin_urls")),
    path("admin/", admin.site.urls),
    path("metrics", views.metrics_view, name="metrics"),
    path("healthz", views.health_view, name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/budgets/", include("apps.budgets.urls")),
    path("api/", include("apps.reports.urls")),
    path("", include("apps.gateway.urls")),
]
