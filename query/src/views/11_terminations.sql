-- When each terminated app was first terminated (10.2.2).
SELECT app_id, min(event_time) AS terminated_at
FROM app_events
WHERE action = 'terminate'
GROUP BY app_id
