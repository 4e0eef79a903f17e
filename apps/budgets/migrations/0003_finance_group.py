"""The `finance` group: may create and change caps. Everyone else on the staff reads them."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

FINANCE_PERMISSIONS = [
    "add_budget",
    "change_budget",
    "view_budget",
    "view_budgetchange",
    "view_budgetalert",
    "view_budgetcounter",
    "view_reservation",
]


def create_finance_group(apps, schema_editor):
    # Permissions are normally created after all migrations ran; this one needs them now.
    app_config = apps.get_app_config("budgets")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="finance")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="budgets", codename__in=FINANCE_PERMISSIONS))


def remove_finance_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="finance").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0002_hot_path_functions"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_finance_group, remove_finance_group)]
