from django.apps import AppConfig


class AnomaliesConfig(AppConfig):
    name = "apps.anomalies"
    label = "anomalies"
    verbose_name = "Anomalies"

    def ready(self) -> None:
        from apps.anomalies import collectors  # noqa: F401  (registers the scrape-time gauges)
