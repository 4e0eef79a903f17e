from django.apps import AppConfig


class FinopsConfig(AppConfig):
    name = "finops"
    verbose_name = "finops"

    def ready(self) -> None:
        from finops import checks  # noqa: F401  (registers the system checks)
