-- Spend decided without the budget database (budget_state = fail_open), last 24 hours, per org and hour.
-- `budget-reconcile` books it onto the counters within 5 minutes of the database answering again.
SELECT o.slug AS org, to_char(date_trunc('hour', r.received_at), 'YYYY-MM-DD HH24:MI') AS hour,
       count(*) AS requests, count(DISTINCT r.member_id) AS users, round(sum(r.cost_usd), 2) AS cost_usd,
       count(*) FILTER (WHERE r.status = 'rejected') AS limited
FROM llm_requests r
JOIN tenancy_organization o ON o.id = r.org_id
WHERE r.received_at >= now() - interval '24 hours' AND r.budget_state = 'fail_open'
GROUP BY 1, 2
ORDER BY 2 DESC, cost_usd DESC;
