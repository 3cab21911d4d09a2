-- Per-device states over the covered days (analytics/states.py): each query runs over a
-- connection's views (with no states of its own: connect(use_states=False), so the
-- metric macros read every day's rollup rows) with {through} the last covered day (the first covered day is the
-- first day of data), and returns what a metric reads in place of those days' rollup
-- rows. A metric adds the days after {through} to it, which is why each state keeps what
-- a later day can still change: an earliest time stays, a later one can only add.
-- A state is declared by a line "-- state: NAME", then "-- empty: SELECT ..." giving
-- its columns with no rows (read while no state file is valid), then its query.

-- state: activations
-- empty: SELECT NULL::VARCHAR AS device_id, NULL::DATE AS activation_day, NULL::DATE AS last_day WHERE false
-- each device's first and last day of data (the activations view takes the min and max
-- of these and the later days')
SELECT device_id, min(date) AS activation_day, max(date) AS last_day
FROM rollup_firmware_days WHERE date <= {through} GROUP BY device_id;

-- state: active_weeks
-- empty: SELECT NULL::VARCHAR AS device_id, NULL::DATE AS week WHERE false
-- the weeks each device was active in (the view adds the later days' and keeps each
-- once: the last covered week may go on after {through})
SELECT DISTINCT device_id, date_trunc('week', date)::DATE AS week
FROM rollup_firmware_days WHERE usage_events > 0 AND date <= {through};

-- state: ever_active
-- empty: SELECT NULL::VARCHAR AS device_id WHERE false
-- the devices active on any covered day (feature_adoption counts the devices active in
-- the period from these and the later days')
SELECT DISTINCT device_id FROM device_days WHERE active AND day <= {through};

-- state: activity
-- empty: SELECT NULL::VARCHAR AS segment_by_of, NULL::DATE AS day, NULL::VARCHAR AS segment, NULL::BIGINT AS dau, NULL::BIGINT AS wau, NULL::BIGINT AS mau, NULL::DOUBLE AS stickiness WHERE false
-- active_devices' rows of the covered days, whole fleet, per firmware and per model: a
-- day's counts depend on that day and the 29 before it, so later days change none
SELECT 'all' AS segment_by_of, * FROM active_devices(until := {through})
UNION ALL SELECT 'fw', * FROM active_devices(until := {through}, segment_by := 'fw')
UNION ALL SELECT 'hw', * FROM active_devices(until := {through}, segment_by := 'hw');

-- state: last_active
-- empty: SELECT NULL::VARCHAR AS segment_by_of, NULL::VARCHAR AS segment, NULL::VARCHAR AS device_id, NULL::DATE AS day WHERE false
-- each (device, segment) pair's last active day, where a later day's WAU or MAU can
-- still count it (the 29 days before the day after the last covered one); whole fleet,
-- per firmware and per model
SELECT segment_by AS segment_by_of, segment, device_id, max(day) AS day FROM (
    SELECT 'all' AS segment_by, 'all' AS segment, device_id, day FROM device_days
    WHERE active AND day <= {through}
    UNION ALL SELECT 'fw', fw, device_id, day FROM device_days WHERE active AND day <= {through}
    UNION ALL SELECT 'hw', hw, device_id, day FROM device_days WHERE active AND day <= {through}
) GROUP BY ALL HAVING max(day) > {through} - 29;

-- state: funnel
-- empty: SELECT * FROM rollup_funnel_days WHERE false
-- funnel_days rows for the dashboard's funnel as if each device's covered days had held
-- only three step events: its first step 1 (t1), the first step 2 at or after it (t2)
-- and the first step 3 at or after that (t3), whatever the window. The funnel over
-- these rows and any later days' is the funnel over all the days: a later day's step 1
-- comes after t1, its step 2 after t2 (so it counts only where t2 is missing, and is
-- out of the window whenever t2 is), and its step 3 likewise.
SELECT device_id, date,
       CASE WHEN date = d1 THEN t1 END AS f1,
       CASE WHEN date = d2 THEN t2 END AS f2,
       CASE WHEN date = d3 THEN t3 END AS f3,
       CASE WHEN date = d2 AND d2 = d1 THEN t2 END AS f2a1,
       CASE WHEN date = d3 AND d3 = d2 THEN t3 END AS f3a2,
       CASE WHEN date = d3 AND d3 = d2 AND d2 = d1 THEN t3 END AS f3a2a1
FROM (SELECT *, unnest(list_distinct([d1, d2, d3])) AS date
      FROM funnel_firsts(DATE '1970-01-01', {through}, false, true));

-- state: features
-- empty: SELECT NULL::VARCHAR AS device_id, NULL::VARCHAR AS feature, NULL::DATE AS first_use, NULL::BIGINT AS uses, NULL::BIGINT AS days_used WHERE false
-- per device and feature: the first day of use, uses and days used (feature_adoption
-- takes the min and the sums of these and the later days')
SELECT device_id, feature, min(date) AS first_use, sum(uses)::BIGINT AS uses,
       count(*) FILTER (WHERE first_all) AS days_used
FROM rollup_feature_days WHERE date <= {through} GROUP BY ALL;

-- state: sessions
-- empty: SELECT NULL::VARCHAR AS segment_by_of, NULL::DATE AS day, NULL::VARCHAR AS segment, NULL::BIGINT AS devices, NULL::BIGINT AS sessions, NULL::DOUBLE AS sessions_per_device_day, NULL::DOUBLE AS median_minutes, NULL::DOUBLE AS mean_minutes WHERE false
-- the sessions metric's rows for the days before the last covered one, for the whole
-- fleet, per firmware and per model: a session lasts 24 h at most, so one starting then
-- ends by the last covered day, and later days change none of these rows
SELECT 'all' AS segment_by_of, * FROM sessions(until := {through} - 1)
UNION ALL SELECT 'fw', * FROM sessions(until := {through} - 1, segment_by := 'fw')
UNION ALL SELECT 'hw', * FROM sessions(until := {through} - 1, segment_by := 'hw');

-- state: session_chains
-- empty: SELECT NULL::VARCHAR AS device_id, NULL::DATE AS date, NULL::TIMESTAMPTZ AS started, NULL::TIMESTAMPTZ AS ended, NULL::VARCHAR AS fw, NULL::VARCHAR AS hw, NULL::BOOLEAN AS whole_all, NULL::BOOLEAN AS whole_fw, NULL::BOOLEAN AS whole_hw WHERE false
-- the chains of open sub-runs up to the day before the last covered one that reach its
-- end, each as one open sub-run of that day starting when the chain starts: what the
-- sessions starting on the last covered day or later may continue (or be cut from)
SELECT device_id, last_date AS date, started, ended, fw, hw, whole_all, whole_fw, whole_hw
FROM session_chains(DATE '1970-01-01', {through} - 1, false)
WHERE last_date = {through} - 1;

-- state: health
-- empty: SELECT NULL::VARCHAR AS segment_by_of, NULL::VARCHAR AS segment, NULL::VARCHAR AS device_id, NULL::BIGINT AS device_days, NULL::BIGINT AS crashes, NULL::BIGINT AS reboots, NULL::DOUBLE AS heartbeats, NULL::DOUBLE AS expected_heartbeats, NULL::BIGINT AS records_dropped WHERE false
-- fleet_health's per-device sums over the days before the last covered one, per
-- firmware, per model and for the whole fleet, with every heartbeat expected up to the
-- last covered day's midnight: complete for those days (fleet_health reads them only
-- once as_of is past it, and sums the rest of the days onto them)
SELECT segment_by AS segment_by_of, segment, device_id,
       count(*) FILTER (WHERE day_row) AS device_days, sum(crashes) AS crashes,
       sum(reboots) AS reboots, sum(heartbeats) AS heartbeats,
       sum(expected_heartbeats) AS expected_heartbeats, sum(records_dropped) AS records_dropped
FROM (SELECT 'fw' AS segment_by, * FROM device_health_rows(
          until := {through} - 1, segment_by := 'fw',
          as_of := to_timestamp(({through} - DATE '1970-01-01')::BIGINT * 86400))
      UNION ALL SELECT 'hw', * FROM device_health_rows(
          until := {through} - 1, segment_by := 'hw',
          as_of := to_timestamp(({through} - DATE '1970-01-01')::BIGINT * 86400))
      UNION ALL SELECT 'all', * FROM device_health_rows(
          until := {through} - 1, segment_by := 'all',
          as_of := to_timestamp(({through} - DATE '1970-01-01')::BIGINT * 86400)))
GROUP BY ALL;

-- state: reading_devices
-- empty: SELECT NULL::VARCHAR AS hw, NULL::VARCHAR AS device_id, NULL::BIGINT AS readings WHERE false
-- readings per model and device (readings_by_model counts the devices and sums these
-- and the later days')
SELECT hw, device_id, sum(readings)::BIGINT AS readings
FROM rollup_reading_devices WHERE date <= {through} GROUP BY ALL;

-- state: firmware_rollout
-- empty: SELECT NULL::DATE AS day, NULL::VARCHAR AS fw, NULL::BIGINT AS devices, NULL::DOUBLE AS share WHERE false
-- the metric's rows of the covered days (each day's depend on that day alone)
SELECT * FROM firmware_rollout(until := {through});

-- state: crash_free_weeks
-- empty: SELECT NULL::DATE AS week, NULL::VARCHAR AS fw, NULL::BIGINT AS devices, NULL::BIGINT AS crash_free_devices WHERE false
-- crash_free_weeks' rows of the weeks whose days the state covers, whole
SELECT * FROM crash_free_weeks(until := {through}) WHERE week + 6 <= {through};

-- state: lifecycle
-- empty: SELECT NULL::DATE AS week, NULL::BIGINT AS new_devices, NULL::BIGINT AS returning_devices, NULL::BIGINT AS resurrecting_devices, NULL::BIGINT AS dormant_devices WHERE false
-- lifecycle's rows of the weeks the covered days hold whole (a week's row depends on
-- it and the week before)
SELECT * FROM lifecycle() WHERE week + 6 <= {through};
