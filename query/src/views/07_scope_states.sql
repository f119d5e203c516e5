-- Active scopes as intervals: after each change of (app, user, scope) the
-- scope is active (a grant) or not (a revoke or unsubscribe) from `valid_from`
-- until the next change (`valid_to`, exclusive; null = still so at `$now`).
-- Changes at equal times give empty intervals except the last one, so an event
-- at time t sees the state after every change at or before t, ties applied in
-- the order grant, revoke, unsubscribe. `was_active` is the state just before
-- the change. An event at t is covered by exactly one interval of its key:
--   valid_from <= t AND (valid_to IS NULL OR t < valid_to)
SELECT app_id, user_id, scope, event_id, action, rank,
       action = 'grant' AS active,
       event_time AS valid_from,
       lead(event_time) OVER w AS valid_to,
       coalesce(lag(action) OVER w = 'grant', false) AS was_active
FROM scope_changes
WINDOW w AS (PARTITION BY app_id, user_id, scope ORDER BY event_time, rank, event_id)
