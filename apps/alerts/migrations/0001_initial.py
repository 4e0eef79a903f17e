# AlertRoute and AlertDelivery move from apps.anomalies to apps.alerts (#15). Their tables (alert_routes,
# alert_deliveries) stay as they are: this migration only adds the models to the alerts app's state, and
# anomalies 0002 removes them from the anomalies app's state. No table is dropped, created or altered.

import django.db.models.deletion
from django.db import migrations, models


def content_types_to_alerts(apps, schema_editor):
    """Keep the admin permissions (and log entries) of the two models: their content types change app."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in ("alertroute", "alertdelivery"):
        if not ContentType.objects.filter(app_label="alerts", model=model).exists():
            ContentType.objects.filter(app_label="anomalies", model=model).update(app_label="alerts")


def content_types_to_anomalies(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in ("alertroute", "alertdelivery"):
        if not ContentType.objects.filter(app_label="anomalies", model=model).exists():
            ContentType.objects.filter(app_label="alerts", model=model).update(app_label="anomalies")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("tenancy", "0001_initial"),
        ("anomalies", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="AlertRoute",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=200)),
                        (
                            "severity",
                            models.CharField(choices=[("info", "Info"), ("warning", "Warning"), ("critical", "Critical")], max_length=16),
                        ),
                        (
                            "scope_type",
                            models.CharField(
                                blank=True,
                                choices=[("org", "Org"), ("team", "Team"), ("model", "Model"), ("member", "Member")],
                                help_text="blank: any scope",
                                max_length=16,
                            ),
                        ),
                        (
                            "receiver",
                            models.CharField(
                                choices=[
                                    ("webhook", "webhook (Slack-compatible JSON)"),
                                    ("email", "email"),
                                    ("prometheus", "Prometheus (gauge / Alertmanager)"),
                                ],
                                max_length=16,
                            ),
                        ),
                        (
                            "target",
                            models.CharField(blank=True, help_text="webhook URL, or comma-separated email addresses", max_length=1000),
                        ),
                        ("enabled", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "org",
                            models.ForeignKey(
                                blank=True,
                                help_text="empty: any org",
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="tenancy.organization",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "alert_routes",
                        "ordering": ["severity", "name"],
                    },
                ),
                migrations.CreateModel(
                    name="AlertDelivery",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        (
                            "receiver",
                            models.CharField(
                                choices=[
                                    ("webhook", "webhook (Slack-compatible JSON)"),
                                    ("email", "email"),
                                    ("prometheus", "Prometheus (gauge / Alertmanager)"),
                                ],
                                max_length=16,
                            ),
                        ),
                        ("target", models.CharField(blank=True, max_length=1000)),
                        (
                            "severity",
                            models.CharField(choices=[("info", "Info"), ("warning", "Warning"), ("critical", "Critical")], max_length=16),
                        ),
                        ("scope_type", models.CharField(blank=True, max_length=16)),
                        ("title", models.CharField(max_length=300)),
                        ("text", models.TextField(blank=True)),
                        ("payload", models.JSONField(blank=True, default=dict)),
                        (
                            "status",
                            models.CharField(
                                choices=[("pending", "Pending"), ("sending", "Sending"), ("sent", "Sent"), ("failed", "Failed")],
                                db_index=True,
                                default="pending",
                                max_length=16,
                            ),
                        ),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("last_error", models.CharField(blank=True, max_length=500)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("sent_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "org",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="tenancy.organization",
                            ),
                        ),
                        (
                            "route",
                            models.ForeignKey(
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="deliveries",
                                to="alerts.alertroute",
                            ),
                        ),
                        (
                            "anomaly",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="deliveries",
                                to="anomalies.anomaly",
                            ),
                        ),
                    ],
                    options={
                        "verbose_name_plural": "alert deliveries",
                        "db_table": "alert_deliveries",
                        "ordering": ["-created_at"],
                    },
                ),
                migrations.AddConstraint(
                    model_name="alertroute",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("receiver", "prometheus"), models.Q(("target", ""), _negated=True), _connector="OR"),
                        name="alert_route_target_required",
                    ),
                ),
            ],
        ),
        migrations.RunPython(content_types_to_alerts, content_types_to_anomalies),
    ]
