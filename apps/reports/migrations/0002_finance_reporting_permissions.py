"""The `finance` group (created by budgets 0003) also reads the ledger, tenancy and reports, and triages anomalies."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

FINANCE_PERMISSIONS = {
    "ledger": ["view_llmrequest", "view_costdailysummary", "view_modelprice"],
    "tenancy": ["view_organization", "view_team", "view_member", "view_apikey"],
    "anomalies": ["view_anomaly", "change_anomaly"],
    "reports": ["view_routedailysummary"],
}


def grant(apps, schema_editor):
    # Permissions are normally created after all migrations ran; these are needed now.
    for label in FINANCE_PERMISSIONS:
        app_config = apps.get_app_config(label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="finance")
    for label, codenames in FINANCE_PERMISSIONS.items():
        group.permissions.add(*Permission.objects.filter(content_type__app_label=label, codename__in=codenames))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="finance").first()
    if group is None:
        return
    for label, codenames in FINANCE_PERMISSIONS.items():
        group.permissions.remove(*Permission.objects.filter(content_type__app_label=label, codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0001_initial"),
        ("budgets", "0003_finance_group"),
        ("anomalies", "0001_initial"),
        ("ledger", "0001_initial"),
        ("tenancy", "0001_initial"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
