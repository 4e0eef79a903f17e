from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    label = "gateway"

    def ready(self) -> None:
        from apps.gateway.metrics import ledger_dead_letters
        from finops.metrics import register_scrape_collector

        register_scrape_collector(ledger_dead_letters)
