-- Events that may start a deletion obligation (SPEC 4), before the "prior data
-- access" condition: an unsubscribe, a revoke leaving no active scope (6.5.7),
-- an app terminate (10.2.2, all users: user_id null), a deletion request
-- (6.5.5, 6.5.6; for one user or all).
SELECT app_id, user_id, 'unsubscribe' AS reason, event_time AS created_at, event_id AS source_event_id
FROM grant_events
WHERE action = 'unsubscribe'
UNION ALL
SELECT app_id, user_id, 'revoke' AS reason, event_time AS created_at, event_id AS source_event_id
FROM pair_scope_counts
WHERE action = 'revoke' AND active_before > 0 AND active_after = 0
UNION ALL
SELECT app_id, CAST(NULL AS VARCHAR) AS user_id, 'termination' AS reason, event_time AS created_at,
       event_id AS source_event_id
FROM app_events
WHERE action = 'terminate'
UNION ALL
SELECT app_id, user_id, reason, event_time AS created_at, event_id AS source_event_id
FROM deletion_events
WHERE kind = 'request'
