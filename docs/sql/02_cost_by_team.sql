-- Spend per team over the last 30 days (chargeback view).
SELECT o.name AS org, t.name AS team, sum(s.requests) AS requests,
       sum(s.prompt_tokens) AS prompt_tokens, sum(s.completion_tokens) AS completion_tokens,
       sum(s.cost_usd) AS cost_usd, sum(s.saved_usd) AS saved_usd
FROM cost_daily_summary s
JOIN tenancy_team t ON t.id = s.team_id
JOIN tenancy_organization o ON o.id = t.org_id
WHERE s.date >= (now() AT TIME ZONE 'UTC')::date - 30
GROUP BY o.name, t.name
ORDER BY cost_usd DESC;
