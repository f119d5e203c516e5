-- id: cross_border
-- clause: data-security letter
-- severity: high
-- A data access returning personal data (non-empty data_categories) to a
-- caller outside the allowed regions (`--allowed-regions`, default CN) by an
-- app whose declaration in force is not export_approved. A call without a
-- client_region is not flagged: nothing proves where it went.
SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope, a.event_time,
       [a.event_id] AS event_ids
FROM data_access a
LEFT JOIN declarations d
  ON d.app_id = a.app_id AND d.valid_from <= a.event_time
 AND (d.valid_to IS NULL OR a.event_time < d.valid_to)
WHERE cardinality(a.data_categories) > 0
  AND a.client_region NOT IN ($allowed_regions)
  AND NOT coalesce(d.export_approved, false)
