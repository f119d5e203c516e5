-- One row per (app, user, scope) and grants event that changes that scope:
-- a `grant` or `revoke` listing it, or an `unsubscribe` of the pair (which
-- clears every scope the pair was ever granted). `rank` orders events at equal
-- times as SPEC 3 applies them: grant (0), revoke (1), unsubscribe (2); the
-- event id breaks remaining ties so the order is total and deterministic.
WITH listed AS (
    SELECT DISTINCT app_id, user_id, scope, event_time, event_id, action
    FROM (
        SELECT app_id, user_id, unnest(scopes) AS scope, event_time, event_id, action
        FROM grant_events
        WHERE action = 'grant' OR action = 'revoke'
    ) AS exploded
    WHERE scope IS NOT NULL
),
granted AS (
    SELECT DISTINCT app_id, user_id, scope FROM listed WHERE action = 'grant'
)
SELECT app_id, user_id, scope, event_time,
       CASE WHEN action = 'grant' THEN 0 ELSE 1 END AS rank, event_id, action
FROM listed
UNION ALL
SELECT u.app_id, u.user_id, g.scope, u.event_time, 2 AS rank, u.event_id, u.action
FROM grant_events u
JOIN granted g ON g.app_id = u.app_id AND g.user_id = u.user_id
WHERE u.action = 'unsubscribe'
