-- Is the cache working: share of requests served from each tier, per hour, last 12 hours.
-- A cache outage shows the exact and semantic shares falling to zero (or "bypass" rising) while traffic stays.
SELECT to_char(date_trunc('hour', received_at), 'YYYY-MM-DD HH24:MI') AS hour, count(*) AS requests,
       round(100.0 * count(*) FILTER (WHERE cache_status = 'exact') / count(*), 1) AS exact_pct,
       round(100.0 * count(*) FILTER (WHERE cache_status = 'semantic') / count(*), 1) AS semantic_pct,
       round(100.0 * count(*) FILTER (WHERE cache_status = 'bypass') / count(*), 1) AS bypass_pct,
       round(sum(saved_usd), 2) AS saved_usd, round(sum(cost_usd), 2) AS cost_usd
FROM llm_requests
WHERE received_at >= date_trunc('hour', now()) - interval '12 hours' AND endpoint <> 'embeddings'
GROUP BY 1
ORDER BY 1 DESC;
