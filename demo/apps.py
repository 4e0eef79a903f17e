from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo workload (seed_demo, ensure_demo_users) and the mock LLM upstream. No runtime app imports it."""

    name = "demo"
    label = "demo"
    verbose_name = "Demo seed and mock LLM"
