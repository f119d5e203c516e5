-- Deletion requests and receipts up to the evaluation time; a request without
-- a reason counts as the user's own request.
SELECT event_id, event_time, app_id, user_id, kind,
       CASE WHEN kind = 'request' THEN coalesce(reason, 'user_request') ELSE reason END AS reason
FROM deletions
WHERE event_time <= $now
