"""Seed the default ladder (cheap / mid / premium), the RouteLLM eval ladder, the global policies and starter keyword rules.

The rows are defined in apps/routing/defaults.py (shared with `routing_defaults_ensure`).
"""

from django.db import migrations

from apps.routing import defaults


def seed(apps, schema_editor):
    defaults.seed(
        Tier=apps.get_model("routing", "Tier"),
        TierModel=apps.get_model("routing", "TierModel"),
        RoutePolicy=apps.get_model("routing", "RoutePolicy"),
        KeywordRule=apps.get_model("routing", "KeywordRule"),
    )


def unseed(apps, schema_editor):
    defaults.unseed(
        Tier=apps.get_model("routing", "Tier"),
        RoutePolicy=apps.get_model("routing", "RoutePolicy"),
        KeywordRule=apps.get_model("routing", "KeywordRule"),
    )


class Migration(migrations.Migration):
    dependencies = [("routing", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
