-- The declaration in force: the latest register/update of the app at or before
-- a time (SPEC 2), as intervals [valid_from, valid_to); valid_to null = the
-- current declaration at `$now`. Ties at one time go to the larger event id.
-- An event at t joins its declaration with
--   d.app_id = x.app_id AND d.valid_from <= t AND (d.valid_to IS NULL OR t < d.valid_to)
SELECT app_id, developer_id, event_id, declared_scopes, declared_categories,
       coalesce(export_approved, false) AS export_approved,
       event_time AS valid_from,
       lead(event_time) OVER (PARTITION BY app_id ORDER BY event_time, event_id) AS valid_to
FROM app_events
WHERE action = 'register' OR action = 'update'
