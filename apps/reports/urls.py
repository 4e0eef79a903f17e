from django.urls import path

from apps.reports.apis import AnomalyListApi, SpendApi

app_name = "reports"

urlpatterns = [
    path("spend/", SpendApi.as_view(), name="spend"),
    path("anomalies/", AnomalyListApi.as_view(), name="anomalies"),
]
