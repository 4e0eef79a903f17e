-- Daily spend, requests and cache hits for the last 30 days.
SELECT s.date, sum(s.requests) AS requests, sum(s.cache_hits) AS cache_hits,
       sum(s.cost_usd) AS cost_usd, sum(s.saved_usd) AS saved_usd
FROM cost_daily_summary s
WHERE s.date >= (now() AT TIME ZONE 'UTC')::date - 30
GROUP BY s.date
ORDER BY s.date;
