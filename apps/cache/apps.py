from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "apps.cache"
    label = "cache"
    verbose_name = "Cache"

    def ready(self) -> None:
        from apps.cache.metrics import semantic_entries_collector
        from apps.cache.selectors import vector_connection_init
        from finops.asyncdb import register_connection_init
        from finops.metrics import register_scrape_collector

        register_scrape_collector(semantic_entries_collector)
        register_connection_init(vector_connection_init)
