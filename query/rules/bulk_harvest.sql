-- id: bulk_harvest
-- clause: 6.5.2, 6.3.2
-- severity: critical
-- An (app, UTC clock hour) whose distinct users accessed is >= 100 and >= 10x
-- the median of the app's distinct users per hour over the 168 hours before,
-- hours without access counting as 0. Evidence: every data access of the app
-- in the hour.
--
-- The median of 168 values is the mean of the 84th and 85th smallest. With n
-- non-empty earlier hours there are 168 - n zeros in front, so the k-th
-- smallest is 0 when k <= 168 - n, else the (k - 168 + n)-th smallest
-- non-empty hour. users >= 10 * (v84 + v85) / 2  <=>  users >= 5 * (v84 + v85).
WITH candidates AS (
    SELECT app_id, hour, users FROM app_hour_users WHERE users >= 100
),
earlier AS (
    SELECT c.app_id, c.hour, h.users,
           row_number() OVER (PARTITION BY c.app_id, c.hour ORDER BY h.users) AS k,
           count(*) OVER (PARTITION BY c.app_id, c.hour) AS n
    FROM candidates c
    JOIN app_hour_users h
      ON h.app_id = c.app_id AND h.hour >= c.hour - INTERVAL '168 hours' AND h.hour < c.hour
),
baseline AS (
    SELECT c.app_id, c.hour, c.users,
           coalesce(sum(CASE WHEN e.k = 84 - 168 + e.n THEN e.users END), 0) AS v84,
           coalesce(sum(CASE WHEN e.k = 85 - 168 + e.n THEN e.users END), 0) AS v85
    FROM candidates c
    LEFT JOIN earlier e ON e.app_id = c.app_id AND e.hour = c.hour
    GROUP BY c.app_id, c.hour, c.users
),
flagged AS (
    SELECT app_id, hour FROM baseline WHERE users >= 5 * (v84 + v85)
)
SELECT f.app_id, d.developer_id, f.hour AS window_start, f.hour + INTERVAL '1 hour' AS window_end,
       array_agg(a.event_id ORDER BY a.event_id) AS event_ids
FROM flagged f
JOIN data_access a ON a.app_id = f.app_id AND a.hour = f.hour
LEFT JOIN app_developers d ON d.app_id = f.app_id
GROUP BY f.app_id, d.developer_id, f.hour
