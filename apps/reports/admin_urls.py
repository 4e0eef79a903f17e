from django.contrib import admin
from django.urls import path

from apps.reports import admin_views

app_name = "reports_admin"

urlpatterns = [
    path("org/<int:org_id>/", admin.site.admin_view(admin_views.org_dashboard_view), name="org"),
    path("team/<int:team_id>/", admin.site.admin_view(admin_views.team_dashboard_view), name="team"),
    path("chargeback.csv", admin.site.admin_view(admin_views.chargeback_csv_view), name="chargeback"),
    path("focus.csv", admin.site.admin_view(admin_views.focus_csv_view), name="focus"),
]
