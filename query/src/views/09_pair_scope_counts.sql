-- Per grants event of (app, user): how many scopes are active just before and
-- just after it, in SPEC order (time, then grant/revoke/unsubscribe, then id).
-- A revoke with `active_before > 0 AND active_after = 0` leaves no active
-- scope: a deletion obligation (6.5.7).
WITH deltas AS (
    SELECT app_id, user_id, event_id, action, rank, valid_from AS event_time,
           sum(CASE WHEN active THEN 1 ELSE 0 END - CASE WHEN was_active THEN 1 ELSE 0 END) AS delta
    FROM scope_states
    GROUP BY app_id, user_id, event_id, action, rank, valid_from
),
running AS (
    SELECT app_id, user_id, event_id, action, event_time, delta,
           sum(delta) OVER (PARTITION BY app_id, user_id ORDER BY event_time, rank, event_id
                            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS active_after
    FROM deltas
)
SELECT app_id, user_id, event_id, action, event_time,
       active_after - delta AS active_before, active_after
FROM running
