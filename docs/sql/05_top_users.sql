-- The 20 users who spent most in the last 30 days.
SELECT o.name AS org, t.name AS team, m.username, sum(s.requests) AS requests, sum(s.cost_usd) AS cost_usd
FROM cost_daily_summary s
JOIN tenancy_member m ON m.id = s.user_id
JOIN tenancy_team t ON t.id = m.team_id
JOIN tenancy_organization o ON o.id = m.org_id
WHERE s.date >= (now() AT TIME ZONE 'UTC')::date - 30
GROUP BY o.name, t.name, m.username
ORDER BY cost_usd DESC
LIMIT 20;
