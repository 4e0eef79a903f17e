-- Which upstream fails: failed requests, fallbacks and attempts per model in the last hour.
SELECT coalesce(nullif(r.fallback_from, ''), r.model) AS first_model, r.model AS answered_by, r.provider,
       count(*) AS requests, count(*) FILTER (WHERE r.status = 'failed') AS failed,
       count(*) FILTER (WHERE r.fallback_from <> '') AS fell_back, round(avg(r.attempts), 2) AS avg_attempts,
       string_agg(DISTINCT nullif(r.error_code, ''), ', ') AS error_codes,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY r.upstream_ms)::numeric, 0) AS upstream_p95_ms
FROM llm_requests r
WHERE r.received_at >= now() - interval '1 hour' AND r.endpoint <> 'embeddings'
GROUP BY 1, 2, 3
ORDER BY failed DESC, fell_back DESC
LIMIT 15;
