-- id: undeclared_scope
-- clause: 6.5.4
-- severity: medium
-- A data access whose required_scope is not among the declared_scopes of the
-- app's declaration in force at the event's time (or the app had none).
SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope, a.event_time,
       [a.event_id] AS event_ids
FROM data_access a
LEFT JOIN declarations d
  ON d.app_id = a.app_id AND d.valid_from <= a.event_time
 AND (d.valid_to IS NULL OR a.event_time < d.valid_to)
WHERE a.required_scope IS NOT NULL
  AND NOT coalesce(array_has(d.declared_scopes, a.required_scope), false)
