-- Where each active budget stands in its current period: spent, in flight, cap, action.
SELECT b.id AS budget_id, o.slug AS org, b.scope, coalesce(t.slug, m.username, '') AS subject, b.period, b.action,
       b.cap_usd, round(coalesce(c.spent_usd, 0), 2) AS spent_usd, round(coalesce(c.reserved_usd, 0), 2) AS reserved_usd,
       round(100 * coalesce(c.spent_usd, 0) / nullif(b.cap_usd, 0), 1) AS pct_used
FROM budgets b
JOIN tenancy_organization o ON o.id = b.org_id
LEFT JOIN tenancy_team t ON t.id = b.team_id
LEFT JOIN tenancy_member m ON m.id = b.member_id
LEFT JOIN budget_counters c ON c.budget_id = b.id
    AND c.period_start = date_trunc(CASE WHEN b.period = 'daily' THEN 'day' ELSE 'month' END, now(), 'UTC')
WHERE b.active
ORDER BY pct_used DESC NULLS LAST
LIMIT 15;
