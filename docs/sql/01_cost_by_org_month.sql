-- Month-to-date and previous-month spend per org, from the daily rollup.
SELECT o.name AS org,
       sum(s.cost_usd) FILTER (WHERE s.date >= date_trunc('month', now() AT TIME ZONE 'UTC')::date) AS mtd_usd,
       sum(s.cost_usd) FILTER (WHERE s.date < date_trunc('month', now() AT TIME ZONE 'UTC')::date
                                 AND s.date >= (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month')::date) AS prev_month_usd,
       sum(s.requests) AS requests
FROM cost_daily_summary s
JOIN tenancy_organization o ON o.id = s.org_id
WHERE s.date >= (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month')::date
GROUP BY o.name
ORDER BY mtd_usd DESC NULLS LAST;
