-- Product metrics over the deduplicated `readings` and `events` views.
-- Days are UTC dates (the `date` partition column), whatever the client's time zone.
-- Each view starts with a comment line "-- name: one-line description" used by
-- `fleetpulse metrics --list`.

-- usage_events: events a person caused (the contract's usage events)
CREATE OR REPLACE VIEW usage_events AS
SELECT * FROM events WHERE event IN ({usage_events});

-- devices: every device seen, its latest firmware and hardware, and its connection state
-- status: online/offline from the gateway's presence service, unknown without it.
-- last_seen: now while online; when it went offline; else the time of its last record.
-- A state learned only from a retained message gives no time: nothing is invented.
CREATE OR REPLACE VIEW devices AS
WITH seen AS (
    SELECT device_id, hw, fw, ts FROM readings
    UNION ALL
    SELECT device_id, hw, fw, ts FROM events
),
telemetry AS (
    SELECT device_id, arg_max(hw, ts) AS hw, arg_max(fw, ts) AS fw,
           min(ts) AS first_record, max(ts) AS last_record, count(*) AS records
    FROM seen GROUP BY device_id
),
state AS (
    SELECT device_id,
           arg_max(status, seen_at) AS status,
           max(seen_at) FILTER (WHERE NOT retained) AS status_changed_at
    FROM presence GROUP BY device_id
)
SELECT coalesce(t.device_id, s.device_id) AS device_id,
       t.hw, t.fw, t.first_record AS first_seen,
       coalesce(s.status, 'unknown') AS status,
       CASE WHEN s.status = 'online' THEN current_timestamp
            WHEN s.status = 'offline' AND s.status_changed_at IS NOT NULL
                THEN s.status_changed_at
            ELSE t.last_record END AS last_seen,
       t.last_record,
       coalesce(t.records, 0) AS records
FROM telemetry t FULL JOIN state s USING (device_id);

-- daily_active_devices: devices with at least one usage event, per UTC day
CREATE OR REPLACE VIEW daily_active_devices AS
SELECT date AS day, count(DISTINCT device_id) AS active_devices
FROM usage_events GROUP BY date;

-- feature_usage_daily: per day and feature, devices that used it, uses, share of active devices
CREATE OR REPLACE VIEW feature_usage_daily AS
SELECT u.date AS day,
       u.feature,
       count(DISTINCT u.device_id) AS devices,
       count(*) AS uses,
       count(DISTINCT u.device_id) / any_value(d.active_devices) AS share_of_active
FROM usage_events u JOIN daily_active_devices d ON d.day = u.date
WHERE u.event = 'feature_used'
GROUP BY u.date, u.feature;

-- feature_adoption: share of all active devices in the dataset that ever used each feature
CREATE OR REPLACE VIEW feature_adoption AS
SELECT feature,
       count(DISTINCT device_id) AS devices,
       count(DISTINCT device_id) / (SELECT count(DISTINCT device_id) FROM usage_events)
           AS share_of_active,
       count(*) AS uses
FROM usage_events WHERE event = 'feature_used'
GROUP BY feature;

-- daily_temperature: median and spread of reported temperature per UTC day
CREATE OR REPLACE VIEW daily_temperature AS
SELECT date AS day,
       median(temperature_c) AS median_temperature_c,
       quantile_cont(temperature_c, 0.1) AS p10_temperature_c,
       quantile_cont(temperature_c, 0.9) AS p90_temperature_c,
       median(humidity_pct) AS median_humidity_pct,
       count(*) AS readings
FROM readings GROUP BY date;
