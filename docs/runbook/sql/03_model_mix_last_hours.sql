-- What changed: per org and model, the last 6 hours against the previous 7 days (per-hour averages).
-- A premium-model switch shows a model with no history; a runaway loop shows tokens per request far above normal.
WITH recent AS (
    SELECT org_id, model, count(*) / 6.0 AS requests_per_hour, sum(cost_usd) / 6 AS cost_per_hour,
           avg(prompt_tokens + completion_tokens) AS tokens_per_request
    FROM llm_requests
    WHERE received_at >= date_trunc('hour', now()) - interval '6 hours' AND status IN ('served', 'cached')
    GROUP BY 1, 2
), before AS (
    SELECT org_id, model, count(*) / 168.0 AS requests_per_hour, sum(cost_usd) / 168 AS cost_per_hour,
           avg(prompt_tokens + completion_tokens) AS tokens_per_request
    FROM llm_requests
    WHERE received_at >= date_trunc('hour', now()) - interval '6 hours' - interval '7 days'
      AND received_at < date_trunc('hour', now()) - interval '6 hours' AND status IN ('served', 'cached')
    GROUP BY 1, 2
)
SELECT o.slug AS org, r.model,
       round(r.requests_per_hour, 1) AS req_per_h, round(coalesce(b.requests_per_hour, 0), 1) AS req_per_h_before,
       round(r.cost_per_hour, 2) AS usd_per_h, round(coalesce(b.cost_per_hour, 0), 2) AS usd_per_h_before,
       round(r.tokens_per_request) AS tokens_per_req, round(b.tokens_per_request) AS tokens_per_req_before
FROM recent r
JOIN tenancy_organization o ON o.id = r.org_id
LEFT JOIN before b ON b.org_id = r.org_id AND b.model = r.model
ORDER BY r.cost_per_hour - coalesce(b.cost_per_hour, 0) DESC
LIMIT 10;
