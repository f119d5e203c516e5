-- Deletion obligations and their state at `$now` (SPEC 4).
--
-- An obligation arises only if the app had a data access of the user (of any
-- user, for all users) before created_at. due_at = created_at + the reason's
-- deadline (`policy_deadlines`, reason '*' for reasons the policy does not
-- name). The first receipt of the app at or after created_at, for that user or
-- for all users, fulfils it. State:
--   not_effective   fulfilled, but an event of the app naming the user (any
--                   user, for all) came after the receipt with no new grant of
--                   (app, user) in between
--   fulfilled       receipt at or before due_at
--   fulfilled_late  receipt after due_at
--   overdue         no receipt and $now > due_at
--   open            no receipt and $now <= due_at
WITH first_user_access AS (
    SELECT app_id, user_id, min(event_time) AS first_at FROM data_access GROUP BY app_id, user_id
),
first_app_access AS (
    SELECT app_id, min(first_at) AS first_at FROM first_user_access GROUP BY app_id
),
arisen AS (
    SELECT s.* FROM obligation_sources s
    JOIN first_user_access f ON f.app_id = s.app_id AND f.user_id = s.user_id
    WHERE f.first_at < s.created_at
    UNION ALL
    SELECT s.* FROM obligation_sources s
    JOIN first_app_access f ON f.app_id = s.app_id
    WHERE s.user_id IS NULL AND f.first_at < s.created_at
),
due AS (
    SELECT s.app_id, s.user_id, s.reason, s.created_at, s.source_event_id,
           s.created_at + coalesce(p.deadline, fallback.deadline) AS due_at
    FROM arisen s
    LEFT JOIN policy_deadlines p ON p.reason = s.reason
    CROSS JOIN (SELECT deadline FROM policy_deadlines WHERE reason = '*') AS fallback
),
fulfilment AS (
    SELECT d.app_id, d.user_id, d.reason, d.created_at, d.source_event_id, d.due_at,
           min(r.event_time) AS fulfilled_at
    FROM due d
    LEFT JOIN receipts r
      ON r.app_id = d.app_id AND (r.user_id IS NULL OR r.user_id = d.user_id)
     AND r.event_time >= d.created_at
    GROUP BY d.app_id, d.user_id, d.reason, d.created_at, d.source_event_id, d.due_at
),
after_receipt AS (
    SELECT f.source_event_id, f.reason, f.app_id, f.created_at, a.user_id, a.event_time, f.fulfilled_at
    FROM fulfilment f JOIN access a ON a.app_id = f.app_id AND a.user_id = f.user_id
    WHERE a.event_time > f.fulfilled_at
    UNION ALL
    SELECT f.source_event_id, f.reason, f.app_id, f.created_at, a.user_id, a.event_time, f.fulfilled_at
    FROM fulfilment f JOIN access a ON a.app_id = f.app_id
    WHERE f.user_id IS NULL AND a.user_id IS NOT NULL AND a.event_time > f.fulfilled_at
),
not_effective AS (
    SELECT DISTINCT x.source_event_id, x.reason, x.app_id, x.created_at
    FROM after_receipt x
    WHERE NOT EXISTS (
        SELECT 1 FROM grant_events g
        WHERE g.action = 'grant' AND g.app_id = x.app_id AND g.user_id = x.user_id
          AND g.event_time > x.fulfilled_at AND g.event_time <= x.event_time
    )
)
SELECT f.app_id, f.user_id, f.reason, f.created_at, f.due_at, f.fulfilled_at,
       CASE
           WHEN f.fulfilled_at IS NOT NULL AND n.source_event_id IS NOT NULL THEN 'not_effective'
           WHEN f.fulfilled_at IS NOT NULL AND f.fulfilled_at <= f.due_at THEN 'fulfilled'
           WHEN f.fulfilled_at IS NOT NULL THEN 'fulfilled_late'
           WHEN $now > f.due_at THEN 'overdue'
           ELSE 'open'
       END AS state,
       f.source_event_id
FROM fulfilment f
LEFT JOIN not_effective n
  ON n.source_event_id = f.source_event_id AND n.reason = f.reason
 AND n.app_id = f.app_id AND n.created_at = f.created_at
