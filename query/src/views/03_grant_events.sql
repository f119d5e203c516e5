-- grant / revoke / unsubscribe events up to the evaluation time.
SELECT event_id, event_time, app_id, user_id, action, scopes
FROM grants
WHERE event_time <= $now
