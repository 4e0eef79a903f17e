-- Is the ledger complete: rows per 5 minutes over the last hour and the delay between answer and insert.
-- A gap (no rows while traffic continued) or a lag of minutes means rows went through the outbox.
SELECT to_char(date_trunc('minute', received_at) - (extract(minute FROM received_at)::int % 5) * interval '1 minute',
               'YYYY-MM-DD HH24:MI') AS five_minutes,
       count(*) AS rows,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM recorded_at - received_at))::numeric, 1) AS lag_p50_s,
       round(max(extract(epoch FROM recorded_at - received_at))::numeric, 1) AS lag_max_s
FROM llm_requests
WHERE received_at >= now() - interval '1 hour'
GROUP BY 1
ORDER BY 1 DESC;
