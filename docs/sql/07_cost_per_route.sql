-- Cost per routing decision: which strategy sent traffic to which tier, and what it cost.
SELECT r.route_strategy, r.tier, count(*) AS requests, sum(r.cost_usd) AS cost_usd,
       sum(r.escalation_cost_usd) AS escalation_cost_usd,
       count(*) FILTER (WHERE r.escalated) AS escalations,
       count(*) FILTER (WHERE r.fallback_from <> '') AS fallbacks
FROM llm_requests r
WHERE r.received_at >= now() - interval '30 days' AND r.status IN ('served', 'cached')
GROUP BY r.route_strategy, r.tier
ORDER BY cost_usd DESC;
