-- The developer of each app: from its latest registry event naming one, else
-- from its API calls.
WITH registry AS (
    SELECT app_id, developer_id,
           row_number() OVER (PARTITION BY app_id ORDER BY event_time DESC, event_id DESC) AS rn
    FROM app_events
    WHERE developer_id IS NOT NULL
),
calls AS (
    SELECT app_id, min(developer_id) AS developer_id FROM access GROUP BY app_id
)
SELECT coalesce(r.app_id, c.app_id) AS app_id, coalesce(r.developer_id, c.developer_id) AS developer_id
FROM (SELECT app_id, developer_id FROM registry WHERE rn = 1) AS r
FULL OUTER JOIN calls c ON c.app_id = r.app_id
