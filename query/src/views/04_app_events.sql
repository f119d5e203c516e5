-- register / update / terminate events up to the evaluation time.
SELECT event_id, event_time, app_id, developer_id, action, declared_scopes,
       declared_categories, export_approved
FROM apps
WHERE event_time <= $now
