from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "apps.budgets"
    label = "budgets"
    verbose_name = "Budgets"

    def ready(self) -> None:
        from apps.budgets.metrics import budget_utilisation
        from finops.metrics import register_scrape_collector

        register_scrape_collector(budget_utilisation)
