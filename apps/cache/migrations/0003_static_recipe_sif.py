"""The static embedding's recipe changed (apps.embeddings.static RECIPE_VERSION 2: SIF-weighted rows). Vectors of
the old recipe live in another space: they are cleared, so stage 1 no longer proposes those entries (they expire by
their TTL; the exact tier is untouched). Prompt text is not kept unless an org opts in, so they cannot be re-embedded."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("cache", "0002_semantic_static_stage"),
    ]

    operations = [
        migrations.RunSQL(
            "UPDATE semantic_cache_entries SET static_embedding = NULL WHERE static_embedding IS NOT NULL",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
