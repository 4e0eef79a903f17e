from django.apps import AppConfig


class CostmodelConfig(AppConfig):
    name = "apps.costmodel"
    label = "costmodel"
    verbose_name = "Cost model and incident drill"
