-- Active scopes as intervals: after each change of (app, user, scope) the
-- scope is active (a grant) or not (a revoke or unsubscribe) from `valid_from`
-- until the next change (`valid_to`, exclusive; null = still so at `$now`).
-- Changes at equal times give empty intervals except the last one, so an event
-- at time t sees the state after every change at or before t, ties applied in
-- the order grant, revoke, unsubscribe. `was_active` is the state just before
-- the change; `ever_granted` whether a grant of the scope came at or before
-- it. An event at t after the key's first change is covered by exactly one
-- interval of its key:
--   valid_from <= t AND (valid_to IS NULL OR t < valid_to)
SELECT app_id, user_id, scope, event_id, action, rank,
       action = 'grant' AS active,
       event_time AS valid_from,
       lead(event_time) OVER (PARTITION BY app_id, user_id, scope
                              ORDER BY event_time, rank, event_id) AS valid_to,
       coalesce(lag(action) OVER (PARTITION BY app_id, user_id, scope
                                  ORDER BY event_time, rank, event_id) = 'grant', false) AS was_active,
       max(CASE WHEN action = 'grant' THEN 1 ELSE 0 END)
           OVER (PARTITION BY app_id, user_id, scope ORDER BY event_time, rank, event_id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) = 1 AS ever_granted
FROM scope_changes
