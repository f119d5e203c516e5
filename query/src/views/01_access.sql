-- Every API call up to the evaluation time, with the columns the rules read.
-- Nothing after `$now` takes part in an evaluation, so a run at a given `--now`
-- gives the same findings however much was ingested since.
SELECT event_id, event_time, date_trunc('hour', event_time) AS hour, app_id, developer_id,
       user_id, required_scope, data_categories, status, client_ip, client_region
FROM api_access
WHERE event_time <= $now
