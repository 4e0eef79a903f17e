"""The budget hot path, in SQL: one round trip reserves against user, team and org atomically.

Every function that locks counter rows locks them in one global order, user → team → org, then
budget id and period start (`budget_lock_rank`), so two requests that share a team or an org can
never deadlock, and the most contended row (the org's) is held for the shortest time. `lock_timeout` is set per call, so a request
waiting behind a held lock gives up on the server side too (no phantom reservation after the
client has already failed open).
"""

from django.db import migrations

FUNCTIONS = r"""
ALTER TABLE budget_counters SET (fillfactor = 70);  -- room for HOT updates of the hot rows

-- The global lock order over counter rows: narrowest scope first, the shared org row last.
CREATE OR REPLACE FUNCTION budget_lock_rank(p_scope text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE p_scope WHEN 'user' THEN 0 WHEN 'team' THEN 1 ELSE 2 END
$fn$;

CREATE OR REPLACE FUNCTION budget_period_start(p_period text, p_at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT date_trunc(CASE WHEN p_period = 'daily' THEN 'day' ELSE 'month' END, p_at, 'UTC')
$fn$;

CREATE OR REPLACE FUNCTION budget_period_end(p_period text, p_start timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT date_add(p_start, CASE WHEN p_period = 'daily' THEN interval '1 day' ELSE interval '1 month' END, 'UTC')
$fn$;

-- Insert alerts for every threshold (and the cap) that the counters' spend has reached.
-- The unique key (budget, period, threshold) makes each fire once; returns the new alert ids.
CREATE OR REPLACE FUNCTION budget_alerts_raise(p_counter_ids bigint[]) RETURNS bigint[]
LANGUAGE sql AS $fn$
    WITH due AS (
        SELECT DISTINCT c.budget_id, c.period_start, t.pct, c.spent_usd, b.cap_usd
        FROM budget_counters c
        JOIN budgets b ON b.id = c.budget_id
        CROSS JOIN LATERAL unnest(array_append(b.soft_pct, 100::smallint)) AS t(pct)
        WHERE c.id = ANY(p_counter_ids) AND b.active AND c.spent_usd > 0 AND c.spent_usd * 100 >= b.cap_usd * t.pct
    ), ins AS (
        INSERT INTO budget_alerts (budget_id, period_start, threshold, spent_usd, cap_usd, created_at, dispatched_at, dispatch_result)
        SELECT budget_id, period_start, pct, spent_usd, cap_usd, now(), NULL, '' FROM due
        ON CONFLICT (budget_id, period_start, threshold) DO NOTHING
        RETURNING id
    )
    SELECT coalesce(array_agg(id ORDER BY id), ARRAY[]::bigint[]) FROM ins
$fn$;

CREATE OR REPLACE FUNCTION budget_reserve(
    p_org bigint, p_team bigint, p_member bigint, p_request uuid, p_amount numeric,
    p_ttl_seconds double precision, p_over_downgrade boolean, p_lock_timeout_ms integer
) RETURNS TABLE (
    decision text,              -- none | ok | soft | block | downgrade
    reservation_id bigint,
    remaining_usd numeric,      -- least over the levels of cap - spent - reserved (after this reservation if made)
    budget_count integer,
    limit_budget_id bigint,     -- the level that refused (block / downgrade)
    limit_scope text,
    limit_label text,
    limit_period text,
    limit_cap_usd numeric,
    limit_spent_usd numeric,
    limit_reserved_usd numeric,
    alert_ids bigint[]
)
LANGUAGE plpgsql AS $fn$
DECLARE
    b record;
    c record;
    v_start timestamptz;
    v_committed numeric;
    v_after numeric;
    v_ids bigint[] := ARRAY[]::bigint[];
    v_remaining_after numeric;
    v_remaining_before numeric;
    v_soft boolean := false;
    v_refuse text;
    v_rank integer;
    l_rank integer;
    l_budget bigint; l_scope text; l_period text; l_cap numeric; l_spent numeric; l_reserved numeric; l_start timestamptz;
    l_label text;
    v_res_id bigint;
    v_alerts bigint[] := ARRAY[]::bigint[];
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    -- Row locks are held until commit; not waiting for the WAL flush shortens them. A crash may lose the
    -- last fraction of a second of reservations and settles: budget_reconcile rebuilds both from the ledger.
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR b IN
        SELECT x.id, x.scope, x.period, x.cap_usd, x.action,
               (SELECT max(t) FROM unnest(x.soft_pct) AS t WHERE t < 100) AS warn_pct
        FROM (
            SELECT * FROM budgets WHERE active AND scope = 'user' AND member_id = p_member
            UNION ALL SELECT * FROM budgets WHERE active AND scope = 'team' AND team_id = p_team
            UNION ALL SELECT * FROM budgets WHERE active AND scope = 'org' AND org_id = p_org
        ) AS x
        ORDER BY budget_lock_rank(x.scope), x.id
    LOOP
        v_start := budget_period_start(b.period, now());
        SELECT k.id, k.spent_usd, k.reserved_usd INTO c
        FROM budget_counters k WHERE k.budget_id = b.id AND k.period_start = v_start FOR UPDATE;
        IF NOT FOUND THEN
            -- First request of a new period: the roll-over is this insert.
            INSERT INTO budget_counters (budget_id, period_start, spent_usd, reserved_usd, updated_at)
            VALUES (b.id, v_start, 0, 0, now())
            ON CONFLICT (budget_id, period_start) DO NOTHING;
            SELECT k.id, k.spent_usd, k.reserved_usd INTO STRICT c
            FROM budget_counters k WHERE k.budget_id = b.id AND k.period_start = v_start FOR UPDATE;
        END IF;
        v_ids := v_ids || c.id;
        v_committed := c.spent_usd + c.reserved_usd;
        v_after := v_committed + p_amount;
        v_remaining_before := LEAST(v_remaining_before, b.cap_usd - v_committed);
        v_remaining_after := LEAST(v_remaining_after, b.cap_usd - v_after);
        IF v_after > b.cap_usd THEN
            IF b.action = 'block' OR (b.action = 'downgrade' AND NOT p_over_downgrade) THEN
                -- Block wins over downgrade; within one kind, name the most specific level.
                v_rank := CASE b.scope WHEN 'user' THEN 1 WHEN 'team' THEN 2 ELSE 3 END;
                IF v_refuse IS NULL
                   OR (v_refuse = 'downgrade' AND b.action = 'block')
                   OR (v_refuse = b.action AND v_rank < l_rank) THEN
                    v_refuse := b.action;
                    l_rank := v_rank;
                    l_budget := b.id; l_scope := b.scope; l_period := b.period; l_cap := b.cap_usd;
                    l_spent := c.spent_usd; l_reserved := c.reserved_usd; l_start := v_start;
                END IF;
            ELSE
                v_soft := true;  -- alert_only over its cap, or a downgraded request over a downgrade cap
            END IF;
        ELSIF b.warn_pct IS NOT NULL AND v_after * 100 >= b.cap_usd * b.warn_pct THEN
            v_soft := true;
        END IF;
    END LOOP;

    IF cardinality(v_ids) = 0 THEN
        RETURN QUERY SELECT 'none'::text, NULL::bigint, NULL::numeric, 0, NULL::bigint, NULL::text, NULL::text,
                            NULL::text, NULL::numeric, NULL::numeric, NULL::numeric, v_alerts;
        RETURN;
    END IF;

    IF v_refuse IS NOT NULL THEN
        SELECT CASE l_scope
                   WHEN 'user' THEN (SELECT m.username FROM tenancy_member m WHERE m.id = bb.member_id)
                   WHEN 'team' THEN (SELECT t.name FROM tenancy_team t WHERE t.id = bb.team_id)
                   ELSE (SELECT o.name FROM tenancy_organization o WHERE o.id = bb.org_id) END
        INTO l_label FROM budgets bb WHERE bb.id = l_budget;
        -- Refusing requests is the cap being reached: alert once per period even before spend gets there.
        WITH ins AS (
            INSERT INTO budget_alerts (budget_id, period_start, threshold, spent_usd, cap_usd, created_at, dispatched_at, dispatch_result)
            VALUES (l_budget, l_start, 100, l_spent, l_cap, now(), NULL, '')
            ON CONFLICT (budget_id, period_start, threshold) DO NOTHING
            RETURNING id
        )
        SELECT coalesce(array_agg(id), ARRAY[]::bigint[]) INTO v_alerts FROM ins;
        RETURN QUERY SELECT v_refuse, NULL::bigint, v_remaining_before, cardinality(v_ids), l_budget, l_scope, l_label,
                            l_period, l_cap, l_spent, l_reserved, v_alerts;
        RETURN;
    END IF;

    INSERT INTO budget_reservations (request_id, org_id, team_id, member_id, counter_ids, amount_usd, actual_usd, state,
                                     created_at, expires_at, settled_at)
    VALUES (p_request, p_org, p_team, p_member, v_ids, p_amount, NULL, 'reserved',
            now(), now() + make_interval(secs => p_ttl_seconds), NULL)
    RETURNING id INTO v_res_id;
    IF p_amount <> 0 THEN
        UPDATE budget_counters SET reserved_usd = reserved_usd + p_amount, updated_at = now() WHERE id = ANY(v_ids);
    END IF;
    RETURN QUERY SELECT CASE WHEN v_soft THEN 'soft' ELSE 'ok' END, v_res_id, v_remaining_after, cardinality(v_ids),
                        NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::numeric, NULL::numeric, NULL::numeric, v_alerts;
END
$fn$;

-- Release reservations and book their actual costs, many at once (the gateway batches settles, which
-- run after the response). Idempotent: an already settled reservation is skipped. A reservation the
-- sweep already expired still books its cost (the request did run), releasing nothing.
-- Locks: the reservations in id order, then their counters in the global order.
CREATE OR REPLACE FUNCTION budget_settle_many(p_ids bigint[], p_actuals numeric[], p_lock_timeout_ms integer) RETURNS bigint[]
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids bigint[];
    v_counters bigint[];
    v_spend boolean;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT array_agg(id) INTO v_ids FROM (
        SELECT r.id FROM budget_reservations r
        WHERE r.id = ANY(p_ids) AND r.state <> 'settled'
        ORDER BY r.id FOR UPDATE
    ) AS s;
    IF v_ids IS NULL THEN
        RETURN ARRAY[]::bigint[];
    END IF;
    SELECT array_agg(DISTINCT cid) INTO v_counters
    FROM budget_reservations r CROSS JOIN LATERAL unnest(r.counter_ids) AS cid WHERE r.id = ANY(v_ids);
    PERFORM 1 FROM budget_counters k JOIN budgets b ON b.id = k.budget_id
    WHERE k.id = ANY(v_counters)
    ORDER BY budget_lock_rank(b.scope), k.budget_id, k.period_start
    FOR UPDATE OF k;

    WITH req AS (
        SELECT DISTINCT ON (u.id) u.id, u.actual FROM unnest(p_ids, p_actuals) AS u(id, actual) ORDER BY u.id
    ), per AS (
        SELECT cid,
               sum(CASE WHEN r.state = 'reserved' THEN r.amount_usd ELSE 0 END) AS released,
               sum(req.actual) AS spent
        FROM budget_reservations r
        JOIN req ON req.id = r.id
        CROSS JOIN LATERAL unnest(r.counter_ids) AS cid
        WHERE r.id = ANY(v_ids)
        GROUP BY cid
    )
    UPDATE budget_counters k
    SET reserved_usd = k.reserved_usd - per.released, spent_usd = k.spent_usd + per.spent, updated_at = now()
    FROM per WHERE k.id = per.cid;

    WITH req AS (
        SELECT DISTINCT ON (u.id) u.id, u.actual FROM unnest(p_ids, p_actuals) AS u(id, actual) ORDER BY u.id
    )
    UPDATE budget_reservations r SET state = 'settled', actual_usd = req.actual, settled_at = now()
    FROM req WHERE r.id = req.id AND r.id = ANY(v_ids);

    SELECT bool_or(a > 0) INTO v_spend FROM unnest(p_actuals) AS a;
    IF v_spend THEN
        RETURN budget_alerts_raise(v_counters);
    END IF;
    RETURN ARRAY[]::bigint[];
END
$fn$;

CREATE OR REPLACE FUNCTION budget_settle(p_reservation bigint, p_actual numeric, p_lock_timeout_ms integer) RETURNS bigint[]
LANGUAGE sql AS $fn$
    SELECT budget_settle_many(ARRAY[p_reservation], ARRAY[p_actual], p_lock_timeout_ms)
$fn$;

-- Expire reservations past their TTL (the request crashed or disconnected) and release their amounts.
CREATE OR REPLACE FUNCTION budget_sweep(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids bigint[];
    rec record;
BEGIN
    SELECT array_agg(id) INTO v_ids FROM (
        SELECT id FROM budget_reservations
        WHERE state = 'reserved' AND expires_at < now()
        ORDER BY id LIMIT p_limit FOR UPDATE SKIP LOCKED
    ) AS s;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE budget_reservations SET state = 'expired', settled_at = now() WHERE id = ANY(v_ids);
    FOR rec IN
        SELECT k.id AS cid, sum(r.amount_usd) AS amount
        FROM budget_reservations r
        CROSS JOIN LATERAL unnest(r.counter_ids) AS u(cid)
        JOIN budget_counters k ON k.id = u.cid
        JOIN budgets b ON b.id = k.budget_id
        WHERE r.id = ANY(v_ids)
        GROUP BY k.id, k.budget_id, k.period_start, b.scope
        ORDER BY budget_lock_rank(b.scope), k.budget_id, k.period_start  -- the global lock order
    LOOP
        UPDATE budget_counters SET reserved_usd = reserved_usd - rec.amount, updated_at = now() WHERE id = rec.cid;
    END LOOP;
    RETURN cardinality(v_ids);
END
$fn$;

-- Ledger spend of one scope in [p_start, p_end), leaving out requests whose reservation is still open.
-- STABLE, so it reads the snapshot of the statement that calls it (budget_reconcile relies on that);
-- one query per scope so each can use its (org|member, received_at) index.
CREATE OR REPLACE FUNCTION budget_ledger_spent(
    p_scope text, p_org bigint, p_team bigint, p_member bigint, p_start timestamptz, p_end timestamptz
) RETURNS numeric
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v numeric;
BEGIN
    IF p_scope = 'user' THEN
        SELECT coalesce(sum(l.cost_usd), 0) INTO v FROM llm_requests l
        WHERE l.member_id = p_member AND l.received_at >= p_start AND l.received_at < p_end
          AND NOT EXISTS (SELECT 1 FROM budget_reservations r WHERE r.request_id = l.request_id AND r.state = 'reserved');
    ELSIF p_scope = 'team' THEN
        SELECT coalesce(sum(l.cost_usd), 0) INTO v FROM llm_requests l
        WHERE l.org_id = p_org AND l.team_id = p_team AND l.received_at >= p_start AND l.received_at < p_end
          AND NOT EXISTS (SELECT 1 FROM budget_reservations r WHERE r.request_id = l.request_id AND r.state = 'reserved');
    ELSE
        SELECT coalesce(sum(l.cost_usd), 0) INTO v FROM llm_requests l
        WHERE l.org_id = p_org AND l.received_at >= p_start AND l.received_at < p_end
          AND NOT EXISTS (SELECT 1 FROM budget_reservations r WHERE r.request_id = l.request_id AND r.state = 'reserved');
    END IF;
    RETURN v;
END
$fn$;

-- Bring one budget's current-period counter in line with the ledger.
--
-- The truth, read in ONE snapshot together with the counter itself:
--   spent    = ledger rows of the period and scope (fail-open requests included), except rows whose
--              reservation is still open (their settle will add them), plus settled reservations whose
--              ledger row is not written yet (settled within p_window_seconds);
--   reserved = open reservations that point at this counter.
-- The counter is then moved by the difference, not overwritten, so a settle that commits between
-- the snapshot and the update is neither lost nor counted twice.
CREATE OR REPLACE FUNCTION budget_reconcile(p_budget bigint, p_window_seconds double precision) RETURNS TABLE (
    counter_id bigint, spent_before numeric, spent_after numeric, reserved_before numeric, reserved_after numeric, alert_ids bigint[]
)
LANGUAGE plpgsql AS $fn$
DECLARE
    b record;
    s record;
    v_start timestamptz;
    v_end timestamptz;
    v_ledger numeric;
BEGIN
    SELECT id, scope, period, org_id, team_id, member_id INTO b FROM budgets WHERE id = p_budget;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_start := budget_period_start(b.period, now());
    v_end := budget_period_end(b.period, v_start);
    INSERT INTO budget_counters (budget_id, period_start, spent_usd, reserved_usd, updated_at)
    VALUES (b.id, v_start, 0, 0, now())
    ON CONFLICT (budget_id, period_start) DO NOTHING;

    SELECT k.id, k.spent_usd, k.reserved_usd,
           budget_ledger_spent(b.scope, b.org_id, b.team_id, b.member_id, v_start, v_end)
           + (SELECT coalesce(sum(r.actual_usd), 0) FROM budget_reservations r
               WHERE r.state = 'settled' AND r.settled_at > now() - make_interval(secs => p_window_seconds)
                 AND k.id = ANY(r.counter_ids)
                 AND NOT EXISTS (SELECT 1 FROM llm_requests l WHERE l.request_id = r.request_id)) AS true_spent,
           (SELECT coalesce(sum(r.amount_usd), 0) FROM budget_reservations r
             WHERE r.state = 'reserved' AND k.id = ANY(r.counter_ids)) AS true_reserved
    INTO STRICT s
    FROM budget_counters k WHERE k.budget_id = b.id AND k.period_start = v_start;

    IF s.true_spent <> s.spent_usd OR s.true_reserved <> s.reserved_usd THEN
        UPDATE budget_counters
        SET spent_usd = spent_usd + (s.true_spent - s.spent_usd),
            reserved_usd = reserved_usd + (s.true_reserved - s.reserved_usd),
            updated_at = now()
        WHERE id = s.id;
    END IF;
    RETURN QUERY SELECT s.id, s.spent_usd, s.true_spent, s.reserved_usd, s.true_reserved, budget_alerts_raise(ARRAY[s.id]);
END
$fn$;
"""

DROP = r"""
DROP FUNCTION IF EXISTS budget_reconcile(bigint, double precision);
DROP FUNCTION IF EXISTS budget_ledger_spent(text, bigint, bigint, bigint, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS budget_sweep(integer);
DROP FUNCTION IF EXISTS budget_settle(bigint, numeric, integer);
DROP FUNCTION IF EXISTS budget_settle_many(bigint[], numeric[], integer);
DROP FUNCTION IF EXISTS budget_reserve(bigint, bigint, bigint, uuid, numeric, double precision, boolean, integer);
DROP FUNCTION IF EXISTS budget_alerts_raise(bigint[]);
DROP FUNCTION IF EXISTS budget_period_end(text, timestamptz);
DROP FUNCTION IF EXISTS budget_period_start(text, timestamptz);
DROP FUNCTION IF EXISTS budget_lock_rank(text);
ALTER TABLE budget_counters RESET (fillfactor);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0001_initial"),
        ("ledger", "0001_initial"),
        ("tenancy", "0001_initial"),
    ]

    operations = [migrations.RunSQL(FUNCTIONS, DROP)]
