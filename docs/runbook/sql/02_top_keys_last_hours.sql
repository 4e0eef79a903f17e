-- Who: the API keys that spent most in the last 6 hours, with their request rate, prompt size and models.
-- A runaway loop shows one key with many requests and growing prompts; a leaked key shows odd hours and a new model.
SELECT r.api_key_prefix, o.slug AS org, t.slug AS team, m.username AS member,
       count(*) AS requests, round(sum(r.cost_usd), 2) AS cost_usd,
       round(avg(r.prompt_tokens)) AS avg_prompt_tokens, max(r.prompt_tokens) AS max_prompt_tokens,
       string_agg(DISTINCT r.model, ', ') AS models,
       to_char(min(r.received_at), 'HH24:MI') AS first_seen, to_char(max(r.received_at), 'HH24:MI') AS last_seen,
       bool_or(k.revoked_at IS NOT NULL) AS revoked
FROM llm_requests r
JOIN tenancy_organization o ON o.id = r.org_id
LEFT JOIN tenancy_team t ON t.id = r.team_id
LEFT JOIN tenancy_member m ON m.id = r.member_id
LEFT JOIN tenancy_apikey k ON k.id = r.api_key_id
WHERE r.received_at >= date_trunc('hour', now()) - interval '6 hours'
GROUP BY 1, 2, 3, 4
ORDER BY sum(r.cost_usd) DESC
LIMIT 10;
