-- Cache savings per org and tier over the last 30 days (detail table: the tier is per row).
SELECT o.name AS org, r.cache_status, count(*) AS hits, sum(r.saved_usd) AS saved_usd,
       avg(r.similarity) FILTER (WHERE r.cache_status = 'semantic') AS avg_similarity
FROM llm_requests r
JOIN tenancy_organization o ON o.id = r.org_id
WHERE r.received_at >= now() - interval '30 days' AND r.cache_status IN ('exact', 'semantic')
GROUP BY o.name, r.cache_status
ORDER BY saved_usd DESC;
