-- Which tenant, since when: spend per org and hour over the last 6 hours, against the same hour one week earlier.
WITH recent AS (
    SELECT org_id, date_trunc('hour', received_at) AS hour, count(*) AS requests, sum(cost_usd) AS cost_usd
    FROM llm_requests
    WHERE received_at >= date_trunc('hour', now()) - interval '6 hours'
    GROUP BY 1, 2
), last_week AS (
    SELECT org_id, date_trunc('hour', received_at) + interval '7 days' AS hour, sum(cost_usd) AS cost_usd
    FROM llm_requests
    WHERE received_at >= date_trunc('hour', now()) - interval '6 hours' - interval '7 days'
      AND received_at < now() - interval '7 days'
    GROUP BY 1, 2
)
SELECT o.slug AS org, to_char(r.hour, 'YYYY-MM-DD HH24:MI') AS hour, r.requests,
       round(r.cost_usd, 2) AS cost_usd, round(coalesce(w.cost_usd, 0), 2) AS same_hour_last_week_usd
FROM recent r
JOIN tenancy_organization o ON o.id = r.org_id
LEFT JOIN last_week w ON w.org_id = r.org_id AND w.hour = r.hour
ORDER BY r.cost_usd DESC
LIMIT 15;
