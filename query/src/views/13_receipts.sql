-- Deletion receipts of the developers; user_id null = for every user of the app.
SELECT event_id, event_time, app_id, user_id, reason
FROM deletion_events
WHERE kind = 'receipt'
