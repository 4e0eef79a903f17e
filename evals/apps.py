from django.apps import AppConfig


class EvalsConfig(AppConfig):
    """Offline work: evaluations, doc generation, the cost model and the incident drill. No runtime app imports it."""

    name = "evals"
    label = "evals"
    verbose_name = "Evaluations, cost model and incident drill"
