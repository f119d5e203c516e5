-- id: client_id_sharing
-- clause: 6.5.3, 6.9
-- severity: high
-- One client_ip used within one UTC clock hour by apps of two or more
-- developers: every call from that IP in that hour (any status) is a finding;
-- window_start/window_end name the hour.
WITH shared AS (
    SELECT client_ip, hour
    FROM access
    WHERE client_ip IS NOT NULL
    GROUP BY client_ip, hour
    HAVING count(DISTINCT developer_id) >= 2
)
SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope, a.event_time,
       s.hour AS window_start, s.hour + INTERVAL '1 hour' AS window_end,
       [a.event_id] AS event_ids
FROM access a
JOIN shared s ON s.client_ip = a.client_ip AND s.hour = a.hour
