from django.urls import path

from apps.budgets.apis import BudgetListApi

app_name = "budgets"

urlpatterns = [
    path("", BudgetListApi.as_view(), name="list"),
]
