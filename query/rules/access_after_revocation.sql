-- id: access_after_revocation
-- clause: 6.5.1, 9.3
-- severity: high
-- A data access whose required_scope was granted to (app, user) before, but is
-- not active at the event's time (revoked, or cleared by an unsubscribe).
-- The scope state covering the event's time: granted before, not active now.
SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope, a.event_time,
       [a.event_id] AS event_ids
FROM data_access a
JOIN scope_states s
  ON s.app_id = a.app_id AND s.user_id = a.user_id AND s.scope = a.required_scope
 AND s.valid_from <= a.event_time AND (s.valid_to IS NULL OR a.event_time < s.valid_to)
WHERE s.ever_granted AND NOT s.active
