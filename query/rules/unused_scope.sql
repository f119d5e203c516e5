-- id: unused_scope
-- clause: 6.5.4
-- severity: low
-- A scope of a live (not terminated) app, declared in its current declaration
-- or active for any user at `$now`, with no data access needing it in the 30
-- days before `$now` (window_start .. window_end). event_ids: the declaration
-- and the grants that give the app the scope.
WITH live AS (
    SELECT d.app_id, d.event_id, d.declared_scopes
    FROM declarations d
    WHERE d.valid_to IS NULL
      AND NOT EXISTS (SELECT 1 FROM terminations t WHERE t.app_id = d.app_id)
),
-- Why the app holds each scope: its declaration in force, and every user's
-- grant still in force (the evidence the finding lists).
held AS (
    SELECT app_id, scope, event_id FROM (
        SELECT app_id, event_id, unnest(declared_scopes) AS scope FROM live
    ) AS declared
    WHERE scope IS NOT NULL
    UNION ALL
    SELECT s.app_id, s.scope, s.event_id FROM scope_states s
    WHERE s.active AND s.valid_to IS NULL AND s.app_id IN (SELECT app_id FROM live)
),
scopes AS (
    SELECT app_id, scope, array_agg(DISTINCT event_id) AS event_ids
    FROM held
    GROUP BY app_id, scope
)
SELECT s.app_id, d.developer_id, s.scope,
       $now - INTERVAL '30 days' AS window_start, $now AS window_end, s.event_ids
FROM scopes s
LEFT JOIN app_developers d ON d.app_id = s.app_id
WHERE NOT EXISTS (
    SELECT 1 FROM data_access a
    WHERE a.app_id = s.app_id AND a.required_scope = s.scope
      AND a.event_time >= $now - INTERVAL '30 days'
)
