-- A data access (SPEC 3): a 2xx call that names a user.
SELECT *
FROM access
WHERE status >= 200 AND status <= 299 AND user_id IS NOT NULL
