-- Month-to-date spend against each active monthly budget (org, team or user scope), from the rollup.
SELECT o.name AS org, b.scope, coalesce(t.name, '') AS team, coalesce(m.username, '') AS username,
       b.cap_usd, b.action,
       coalesce(sum(s.cost_usd), 0) AS mtd_usd,
       round(100 * coalesce(sum(s.cost_usd), 0) / nullif(b.cap_usd, 0), 1) AS utilisation_pct
FROM budgets b
JOIN tenancy_organization o ON o.id = b.org_id
LEFT JOIN tenancy_team t ON t.id = b.team_id
LEFT JOIN tenancy_member m ON m.id = b.member_id
LEFT JOIN cost_daily_summary s
       ON s.date >= date_trunc('month', now() AT TIME ZONE 'UTC')::date
      AND s.org_id = b.org_id
      AND (b.scope = 'org' OR s.team_id = b.team_id)
      AND (b.scope <> 'user' OR s.user_id = b.member_id)
WHERE b.active AND b.period = 'monthly'
GROUP BY o.name, b.scope, t.name, m.username, b.cap_usd, b.action
ORDER BY utilisation_pct DESC NULLS LAST;
