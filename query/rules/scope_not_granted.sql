-- id: scope_not_granted
-- clause: 6.5.1, 9.3
-- severity: high
-- A data access whose required_scope was never granted to (app, user) at or
-- before the event's time.
-- The scope state covering the event's time (none before the first change
-- of the key) tells whether a grant came at or before it.
SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope, a.event_time,
       [a.event_id] AS event_ids
FROM data_access a
LEFT JOIN scope_states s
  ON s.app_id = a.app_id AND s.user_id = a.user_id AND s.scope = a.required_scope
 AND s.valid_from <= a.event_time AND (s.valid_to IS NULL OR a.event_time < s.valid_to)
WHERE a.required_scope IS NOT NULL
  AND (s.app_id IS NULL OR NOT s.ever_granted)
