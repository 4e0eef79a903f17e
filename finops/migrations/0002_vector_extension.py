from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector powers the semantic cache; every database finops runs on needs it."""

    dependencies = [("finops", "0001_initial")]
    operations = [VectorExtension()]
