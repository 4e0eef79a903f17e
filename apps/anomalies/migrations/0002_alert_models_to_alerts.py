# AlertRoute and AlertDelivery now belong to apps.alerts (its 0001 adds them to its state). Only the migration
# state changes here: the tables alert_routes and alert_deliveries are kept, with their rows.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("anomalies", "0001_initial"),
        ("alerts", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(name="AlertDelivery"),
                migrations.DeleteModel(name="AlertRoute"),
            ],
        ),
    ]
