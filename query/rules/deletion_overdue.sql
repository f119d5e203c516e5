-- id: deletion_overdue
-- clause: 6.5.5, 6.5.6, 6.5.7, 10.2.2(3)
-- severity: high
-- A deletion obligation past its due time with no receipt (state `overdue` in
-- `obligations`). The clause is the one of the obligation's reason; evidence:
-- the event that started it.
SELECT o.app_id, d.developer_id, o.user_id, o.reason, o.created_at, o.due_at,
       CASE o.reason
           WHEN 'unsubscribe' THEN '6.5.7'
           WHEN 'revoke' THEN '6.5.7'
           WHEN 'user_request' THEN '6.5.5'
           WHEN 'platform_order' THEN '6.5.6'
           WHEN 'termination' THEN '10.2.2(3)'
           ELSE '6.5.5, 6.5.6, 6.5.7, 10.2.2(3)'
       END AS clause,
       [o.source_event_id] AS event_ids
FROM obligations_at o
LEFT JOIN app_developers d ON d.app_id = o.app_id
WHERE o.state = 'overdue'
