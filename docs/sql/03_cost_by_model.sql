-- Spend per model over the last 30 days, with the average cost per request.
SELECT s.model, sum(s.requests) AS requests, sum(s.cost_usd) AS cost_usd,
       round(sum(s.cost_usd) / nullif(sum(s.requests), 0), 10) AS cost_per_request_usd,
       sum(s.cached_tokens) AS cached_tokens
FROM cost_daily_summary s
WHERE s.date >= (now() AT TIME ZONE 'UTC')::date - 30
GROUP BY s.model
ORDER BY cost_usd DESC;
