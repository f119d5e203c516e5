-- id: access_after_revocation
-- clause: 6.5.1, 9.3
-- severity: high
-- A data access whose required_scope was granted to (app, user) before, but is
-- not active at the event's time (revoked, or cleared by an unsubscribe).
SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope, a.event_time,
       [a.event_id] AS event_ids
FROM data_access a
JOIN first_grants f
  ON f.app_id = a.app_id AND f.user_id = a.user_id AND f.scope = a.required_scope
 AND f.first_granted <= a.event_time
WHERE NOT EXISTS (
    SELECT 1 FROM scope_states s
    WHERE s.app_id = a.app_id AND s.user_id = a.user_id AND s.scope = a.required_scope
      AND s.active AND s.valid_from <= a.event_time
      AND (s.valid_to IS NULL OR a.event_time < s.valid_to)
)
