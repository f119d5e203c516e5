-- When (app, user) was first granted each scope: before that time an access
-- needing the scope is `scope_not_granted`, after it `access_after_revocation`
-- when the scope is not active.
SELECT app_id, user_id, scope, min(valid_from) AS first_granted
FROM scope_states
WHERE action = 'grant'
GROUP BY app_id, user_id, scope
