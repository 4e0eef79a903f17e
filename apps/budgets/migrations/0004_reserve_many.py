"""`budget_reserve_many`: the reservations waiting in one gateway worker, in one round trip.

Each request is reserved exactly as `budget_reserve` (migration 0002) would, in array order, and gets its own row
(`idx` = its 1-based position). Before the first one, every counter row any request of the batch touches is locked in
the global order (user → team → org, then budget id): reserving one request after another inside one transaction would
otherwise take a second request's user row while holding the first one's team and org rows, out of that order, and two
workers' batches could deadlock. A batch of one skips that step (`budget_reserve` locks in order itself).
"""

from django.db import migrations

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION budget_reserve_many(
    p_orgs bigint[], p_teams bigint[], p_members bigint[], p_requests uuid[], p_amounts numeric[],
    p_ttl_seconds double precision, p_over_downgrade boolean[], p_lock_timeout_ms integer
) RETURNS TABLE (
    idx integer,
    decision text,
    reservation_id bigint,
    remaining_usd numeric,
    budget_count integer,
    limit_budget_id bigint,
    limit_scope text,
    limit_label text,
    limit_period text,
    limit_cap_usd numeric,
    limit_spent_usd numeric,
    limit_reserved_usd numeric,
    alert_ids bigint[]
)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    i integer;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    PERFORM set_config('synchronous_commit', 'off', true);
    IF coalesce(cardinality(p_requests), 0) > 1 THEN
        -- The current period's counters of every budget in play: created if missing, then locked in the global order.
        INSERT INTO budget_counters (budget_id, period_start, spent_usd, reserved_usd, updated_at)
        SELECT b.id, budget_period_start(b.period, now()), 0, 0, now()
        FROM budgets b
        WHERE b.active AND ((b.scope = 'user' AND b.member_id = ANY(p_members))
                            OR (b.scope = 'team' AND b.team_id = ANY(p_teams))
                            OR (b.scope = 'org' AND b.org_id = ANY(p_orgs)))
        ORDER BY budget_lock_rank(b.scope), b.id
        ON CONFLICT (budget_id, period_start) DO NOTHING;
        PERFORM 1
        FROM budget_counters k JOIN budgets b ON b.id = k.budget_id
        WHERE b.active AND k.period_start = budget_period_start(b.period, now())
          AND ((b.scope = 'user' AND b.member_id = ANY(p_members))
               OR (b.scope = 'team' AND b.team_id = ANY(p_teams))
               OR (b.scope = 'org' AND b.org_id = ANY(p_orgs)))
        ORDER BY budget_lock_rank(b.scope), k.budget_id, k.period_start
        FOR UPDATE OF k;
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_requests), 0) LOOP
        RETURN QUERY
        SELECT i, r.decision, r.reservation_id, r.remaining_usd, r.budget_count, r.limit_budget_id, r.limit_scope,
               r.limit_label, r.limit_period, r.limit_cap_usd, r.limit_spent_usd, r.limit_reserved_usd, r.alert_ids
        FROM budget_reserve(p_orgs[i], p_teams[i], p_members[i], p_requests[i], p_amounts[i], p_ttl_seconds,
                            p_over_downgrade[i], p_lock_timeout_ms) AS r;
    END LOOP;
END
$fn$;
"""

DROP = r"""
DROP FUNCTION IF EXISTS budget_reserve_many(bigint[], bigint[], bigint[], uuid[], numeric[], double precision, boolean[], integer);
"""


class Migration(migrations.Migration):
    dependencies = [("budgets", "0003_finance_group")]

    operations = [migrations.RunSQL(FUNCTIONS, DROP)]
