from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "apps.budgets"
    label = "budgets"
    verbose_name = "Budgets"

    def ready(self) -> None:
        from apps.budgets.hotpath import budget_connection_warm
        from apps.budgets.metrics import budget_utilisation
        from finops.asyncdb import register_connection_init
        from finops.metrics import register_scrape_collector

        register_scrape_collector(budget_utilisation)
        register_connection_init(budget_connection_warm)
