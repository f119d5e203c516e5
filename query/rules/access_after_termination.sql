-- id: access_after_termination
-- clause: 10.2.2(3)
-- severity: critical
-- A data access by an app at or after its termination.
SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope, a.event_time,
       [a.event_id] AS event_ids
FROM data_access a
JOIN terminations t ON t.app_id = a.app_id
WHERE a.event_time >= t.terminated_at
