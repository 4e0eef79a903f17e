from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "apps.ledger"
    label = "ledger"

    def ready(self) -> None:
        from apps.ledger.metrics import ledger_dead_letters
        from finops.metrics import register_scrape_collector

        register_scrape_collector(ledger_dead_letters)
