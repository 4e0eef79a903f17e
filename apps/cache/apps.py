from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "apps.cache"
    label = "cache"
    verbose_name = "Cache"

    def ready(self) -> None:
        from apps.cache.metrics import semantic_entries_collector
        from finops.metrics import register_scrape_collector

        register_scrape_collector(semantic_entries_collector)
