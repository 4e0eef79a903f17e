"""Usage details: cache-write and reasoning tokens and the service tier on the ledger row, the cache-write rate and the
priority multiplier on the price row, and `finops_cost_usd` replaced by the SQL twin of the new `cost_compute`.

The new function keeps the six leading arguments of 0002's (reports call it with six) and adds three with defaults:
cache-write tokens, the cache-write rate (NULL: the input rate) and the tier multiplier (NULL: 1).
`apps/ledger/tests/test_pricing_sql.py` holds it equal to `apps.ledger.pricing.cost_compute` before rounding.
"""

import django.db.models.expressions
from django.db import migrations, models


COST_FUNCTION = """
DROP FUNCTION IF EXISTS finops_cost_usd(numeric, numeric, numeric, numeric, numeric, numeric);
CREATE OR REPLACE FUNCTION finops_cost_usd(
    p_prompt numeric, p_completion numeric, p_cached numeric, p_input numeric, p_cached_input numeric, p_output numeric,
    p_cache_write numeric DEFAULT 0, p_cache_write_rate numeric DEFAULT NULL, p_multiplier numeric DEFAULT NULL
) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT ((p_prompt - p_cached - p_cache_write) * p_input
            + p_cached * coalesce(p_cached_input, p_input)
            + p_cache_write * coalesce(p_cache_write_rate, p_input)
            + p_completion * p_output) * coalesce(p_multiplier, 1)
           / 1000000
$$;
"""

COST_FUNCTION_0002 = """
DROP FUNCTION IF EXISTS finops_cost_usd(numeric, numeric, numeric, numeric, numeric, numeric, numeric, numeric, numeric);
CREATE OR REPLACE FUNCTION finops_cost_usd(
    p_prompt numeric, p_completion numeric, p_cached numeric, p_input numeric, p_cached_input numeric, p_output numeric
) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT ((p_prompt - p_cached) * p_input + p_cached * coalesce(p_cached_input, p_input) + p_completion * p_output)
           / 1000000
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0004_model_kind"),
        ("tenancy", "0003_member_team_change"),
    ]

    operations = [
        migrations.RunSQL(COST_FUNCTION, COST_FUNCTION_0002),
        migrations.AddField(
            model_name="llmrequest",
            name="cache_write_tokens",
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="llmrequest",
            name="reasoning_tokens",
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="llmrequest",
            name="service_tier",
            field=models.CharField(blank=True, db_default="", default="", max_length=16),
        ),
        migrations.AddField(
            model_name="modelprice",
            name="cache_write_per_1m",
            field=models.DecimalField(blank=True, decimal_places=6, max_digits=12, null=True),
        ),
        migrations.AddField(
            model_name="modelprice",
            name="priority_multiplier",
            field=models.DecimalField(blank=True, decimal_places=3, max_digits=6, null=True),
        ),
        migrations.AddConstraint(
            model_name="llmrequest",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "cache_write_tokens__lte",
                        django.db.models.expressions.CombinedExpression(
                            models.F("prompt_tokens"), "-", models.F("cached_tokens")
                        ),
                    ),
                    ("reasoning_tokens__lte", models.F("completion_tokens")),
                ),
                name="llm_request_usage_details_fit",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelprice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("cache_write_per_1m__isnull", True), ("cache_write_per_1m__gte", 0), _connector="OR"),
                    models.Q(("priority_multiplier__isnull", True), ("priority_multiplier__gt", 0), _connector="OR"),
                ),
                name="price_usage_details_valid",
            ),
        ),
    ]
