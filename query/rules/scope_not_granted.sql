-- id: scope_not_granted
-- clause: 6.5.1, 9.3
-- severity: high
-- A data access whose required_scope was never granted to (app, user) at or
-- before the event's time.
SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope, a.event_time,
       [a.event_id] AS event_ids
FROM data_access a
LEFT JOIN first_grants f
  ON f.app_id = a.app_id AND f.user_id = a.user_id AND f.scope = a.required_scope
WHERE a.required_scope IS NOT NULL
  AND (f.first_granted IS NULL OR f.first_granted > a.event_time)
