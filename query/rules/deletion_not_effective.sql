-- id: deletion_not_effective
-- clause: 6.5.5, 6.5.6, 6.5.7
-- severity: critical
-- An event of the app naming a user (any status) after the app's deletion
-- receipt for that user or for all users, with no new grant of (app, user) in
-- between (a grant at the event's own time counts as in between).
--
-- Some receipt qualifies exactly when the latest one before the event does,
-- so each event is checked against its latest receipt only.
WITH latest_receipt AS (
    SELECT event_id, app_id, developer_id, user_id, required_scope, event_time,
           max(receipt_time) AS receipt_time
    FROM (
        SELECT a.event_id, a.app_id, a.developer_id, a.user_id, a.required_scope, a.event_time,
               r.event_time AS receipt_time
        FROM access a JOIN receipts r ON r.app_id = a.app_id AND r.user_id = a.user_id
        WHERE r.event_time < a.event_time
        UNION ALL
        SELECT a.event_id, a.app_id, a.developer_id, a.user_id, a.required_scope, a.event_time,
               r.event_time AS receipt_time
        FROM access a JOIN receipts r ON r.app_id = a.app_id
        WHERE r.user_id IS NULL AND a.user_id IS NOT NULL AND r.event_time < a.event_time
    ) AS pairs
    GROUP BY event_id, app_id, developer_id, user_id, required_scope, event_time
)
SELECT x.app_id, x.developer_id, x.user_id, x.required_scope AS scope, x.event_time,
       [x.event_id] AS event_ids
FROM latest_receipt x
WHERE NOT EXISTS (
    SELECT 1 FROM grant_events g
    WHERE g.action = 'grant' AND g.app_id = x.app_id AND g.user_id = x.user_id
      AND g.event_time > x.receipt_time AND g.event_time <= x.event_time
)
