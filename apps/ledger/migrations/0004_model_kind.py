"""ModelPrice.kind: "chat" or "embedding". Existing embedding models' rows are marked by name."""

from django.db import migrations, models

EMBEDDING_MODELS = ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002", "all-minilm-l6-v2")


def mark_embeddings(apps, schema_editor):
    ModelPrice = apps.get_model("ledger", "ModelPrice")
    ModelPrice.objects.filter(model__in=EMBEDDING_MODELS).update(kind="embedding")


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_rollup_watermark")]

    operations = [
        migrations.AddField(
            model_name="modelprice",
            name="kind",
            field=models.CharField(choices=[("chat", "chat"), ("embedding", "embedding")], default="chat", max_length=16),
        ),
        migrations.RunPython(mark_embeddings, migrations.RunPython.noop),
    ]
