-- Distinct users whose data each app accessed per UTC clock hour (hours
-- without access have no row: they count as 0).
SELECT app_id, hour, count(DISTINCT user_id) AS users
FROM data_access
GROUP BY app_id, hour
