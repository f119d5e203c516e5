-- id: undeclared_category
-- clause: 6.5.4
-- severity: medium
-- A data access returning a personal-data category that is not among the
-- declared_categories of the app's declaration in force at the event's time.
SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope, a.event_time,
       [a.event_id] AS event_ids
FROM data_access a
LEFT JOIN declarations d
  ON d.app_id = a.app_id AND d.valid_from <= a.event_time
 AND (d.valid_to IS NULL OR a.event_time < d.valid_to)
WHERE cardinality(a.data_categories) > 0
  AND NOT coalesce(array_has_all(d.declared_categories, a.data_categories), false)
