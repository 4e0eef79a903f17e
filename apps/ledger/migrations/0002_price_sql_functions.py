"""The price-in-force rule and the cost formula for SQL readers (reports), next to their Python twins.

`finops_price_in_force(model, on)` is `apps.ledger.pricing.PriceWindow.in_force` (effective_from ≤ on <
effective_to, newest first); `finops_cost_usd(...)` is `apps.ledger.pricing.cost_compute` before rounding
(per 1M tokens, cached tokens at the cached rate, once). `apps/ledger/tests/test_pricing_sql.py` holds them equal.
"""

from django.db import migrations

FUNCTIONS = """
CREATE OR REPLACE FUNCTION finops_price_in_force(p_model text, p_on date) RETURNS model_prices
LANGUAGE sql STABLE AS $$
    SELECT * FROM model_prices
    WHERE model = p_model AND effective_from <= p_on AND (effective_to IS NULL OR effective_to > p_on)
    ORDER BY effective_from DESC LIMIT 1
$$;

CREATE OR REPLACE FUNCTION finops_cost_usd(
    p_prompt numeric, p_completion numeric, p_cached numeric, p_input numeric, p_cached_input numeric, p_output numeric
) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT ((p_prompt - p_cached) * p_input + p_cached * coalesce(p_cached_input, p_input) + p_completion * p_output)
           / 1000000
$$;
"""

DROP = """
DROP FUNCTION IF EXISTS finops_price_in_force(text, date);
DROP FUNCTION IF EXISTS finops_cost_usd(numeric, numeric, numeric, numeric, numeric, numeric);
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunSQL(FUNCTIONS, DROP)]
