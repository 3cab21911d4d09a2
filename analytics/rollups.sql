-- Per-day rollups: what the dashboard's metrics need from raw rows, aggregated one UTC
-- day at a time. Compaction writes each of these for every day it has reduced to one
-- file per table (analytics/rollups.py); the views read a day's rollup while it matches
-- that day's files and compute the same query over raw rows for every other day, so a
-- metric gives the same rows either way.
--
-- Each query reads {readings} and {events} (rows with their `date` partition column)
-- and returns rows keyed by `date`: nothing in them spans two UTC days.
-- A rollup is declared by a line "-- rollup: NAME" before its query.

-- rollup: environment_bands
-- device-hours (a device's readings in one UTC hour, averaged) per temperature band
-- (2 degC) and humidity band (10 %), and the usage events in those hours. Hours are
-- numbered from the epoch by integer division: no time-zone conversion per row. The
-- averages are of decimals (to 1e-6): an exact sum, so the same band whatever order
-- the rows are added in (a float sum in another order once put a 50 % hour at 49.999..).
WITH hours AS (
    SELECT device_id, date, epoch_ms(ts) // 3600000 AS hour,
           avg(temperature_c::DECIMAL(18, 6)) AS t, avg(humidity_pct::DECIMAL(18, 6)) AS h
    FROM {readings} GROUP BY ALL
),
use AS (
    SELECT device_id, date, epoch_ms(ts) // 3600000 AS hour, count(*) AS n
    FROM {events} WHERE event IN ({usage_events}) GROUP BY ALL
)
SELECT date, (floor(t / 2) * 2)::INTEGER AS temp_from_c,
       (floor(h / 10) * 10)::INTEGER AS humidity_from_pct, count(*) AS device_hours,
       sum(coalesce(u.n, 0))::BIGINT AS usage_events
FROM hours LEFT JOIN use u USING (device_id, date, hour) GROUP BY ALL;

-- rollup: reading_values
-- how many readings of each model had each temperature and humidity value: exact
-- quantiles from far fewer rows than readings (sensors report a few thousand values).
-- One pass over the readings for both measures (UNPIVOT leaves out NULL values): over
-- raw rows each pass re-runs deduplication.
SELECT date, hw, measure, value, count(*) AS n
FROM (UNPIVOT (SELECT date, hw, temperature_c, humidity_pct FROM {readings})
      ON temperature_c, humidity_pct INTO NAME measure VALUE value)
GROUP BY ALL;

-- rollup: reading_devices
-- readings per model and device
SELECT date, hw, device_id, count(*) AS readings FROM {readings} GROUP BY ALL;

-- rollup: firmware_days
-- one row per device, day, firmware and model it sent anything under (a device updated
-- or rolled back that day has a row per version): its first and last record's times and
-- its records under them, usage events and the first one's time, crashes (an error, or
-- a power_on whose reset cause is a crash), reboots, heartbeats, the heartbeat interval
-- it reported, records it dropped; and its place in the device's day: whether it is the
-- day's first row, and the next row's first record time (when the device changed
-- firmware again), what device_health_rows spans each row's expected heartbeats with;
-- whether it is the day's last row (its firmware and model are the device-day's in
-- device_days); one row marked per device, day and firmware (first_of_fw_day) and per
-- device, day and model (first_of_hw_day), so device-days are counted per segment
-- without a DISTINCT; and the device-day's records and usage events on every row. Each
-- is a window over every device-day when computed at query time: here a day's rows,
-- once. The health and feature metrics count each record under the firmware that sent
-- it.
WITH recs AS (
    SELECT date, device_id, fw, hw, ts, NULL::VARCHAR AS event, NULL::VARCHAR AS reset_cause,
           NULL::BIGINT AS records_dropped, NULL::BIGINT AS interval_s
    FROM {readings}
    UNION ALL
    SELECT date, device_id, fw, hw, ts, event, reset_cause, records_dropped, interval_s
    FROM {events}
),
rows AS (
    SELECT date, device_id, fw, hw, min(ts) AS first_ts, max(ts) AS last_ts,
           count(*) AS records,
           count(*) FILTER (WHERE event IN ({usage_events})) AS usage_events,
           min(ts) FILTER (WHERE event IN ({usage_events})) AS first_usage_ts,
           count(*) FILTER (WHERE event = 'error' OR (event = 'power_on'
               AND reset_cause IN ({crash_reset_causes}))) AS crashes,
           count(*) FILTER (WHERE event = 'power_on') AS reboots,
           count(*) FILTER (WHERE event = 'heartbeat') AS heartbeats,
           max(interval_s) FILTER (WHERE event = 'heartbeat') AS heartbeat_interval_s,
           coalesce(sum(records_dropped), 0)::BIGINT AS records_dropped
    FROM recs GROUP BY ALL
)
SELECT *, row_number() OVER day_rows = 1 AS first_of_day,
       lead(first_ts) OVER day_rows AS next_first_ts,
       row_number() OVER (PARTITION BY date, device_id ORDER BY last_ts DESC, fw DESC, hw DESC)
           = 1 AS last_of_day,
       row_number() OVER (PARTITION BY date, device_id, fw ORDER BY hw) = 1 AS first_of_fw_day,
       row_number() OVER (PARTITION BY date, device_id, hw ORDER BY fw) = 1 AS first_of_hw_day,
       sum(records) OVER device_day AS day_records,
       sum(usage_events) OVER device_day AS day_usage_events
FROM rows
WINDOW day_rows AS (PARTITION BY date, device_id ORDER BY first_ts, fw, hw),
       device_day AS (PARTITION BY date, device_id);

-- rollup: feature_days
-- feature_used events per device, day, firmware, model and feature. A device that
-- changed firmware that day has two rows for one day; the first_* flags mark one row
-- per device, feature and day (first_fw: and firmware, first_hw: and model), so days of
-- use are counted without a DISTINCT over every row; day_uses, on every row, is the
-- device's uses of the feature that day, so a per-day count reads the first_all rows
-- without a GROUP BY.
SELECT *,
       row_number() OVER (PARTITION BY date, device_id, feature ORDER BY fw, hw) = 1
           AS first_all,
       row_number() OVER (PARTITION BY date, device_id, feature, fw ORDER BY hw) = 1
           AS first_fw,
       row_number() OVER (PARTITION BY date, device_id, feature, hw ORDER BY fw) = 1
           AS first_hw,
       sum(uses) OVER (PARTITION BY date, device_id, feature)::BIGINT AS day_uses
FROM (
    SELECT date, device_id, fw, hw, feature, count(*) AS uses
    FROM {events} WHERE event = 'feature_used' GROUP BY ALL
);

-- rollup: session_parts
-- Usage sessions cut at day boundaries. Within a day, a gap over 30 minutes ends a
-- sub-run. A sub-run can only continue into the day before or after if it is the day's
-- first and starts within 30 minutes of midnight, or the day's last and ends within 30
-- minutes of the next midnight: those are kind 'open', one row each (started, ended),
-- for the sessions metric to chain across days. Every other sub-run is a whole session
-- shorter than a day: kind 'length' counts them per length in minutes, and kind
-- 'device' lists the devices that had one (rows per device would be as many as
-- sessions); its first_* flags mark one row per device and day (first_fw: and firmware,
-- first_hw: and model), so devices are counted without a DISTINCT over every row. An
-- 'open' row's whole_* flags say whether its device had a whole session that day (in
-- the same firmware, model): the sessions metric counts a device whose session that day
-- was chained only when it did not, without looking it up among the device rows.
WITH u AS (
    SELECT device_id, date, ts, fw, hw FROM {events} WHERE event IN ({usage_events})
),
gaps AS (
    SELECT *, CASE WHEN ts - lag(ts) OVER w <= INTERVAL 30 MINUTE THEN 0 ELSE 1 END AS starts
    FROM u WINDOW w AS (PARTITION BY device_id, date ORDER BY ts)
),
numbered AS (
    SELECT *, sum(starts) OVER (PARTITION BY device_id, date ORDER BY ts
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run
    FROM gaps
),
sub AS (
    SELECT device_id, date, run, min(ts) AS started, max(ts) AS ended,
           arg_min(fw, ts) AS fw, arg_min(hw, ts) AS hw
    FROM numbered GROUP BY ALL
),
marked AS (
    SELECT *, (run = 1 AND epoch_us(started) - midnight <= 1800000000)
              OR (run = max(run) OVER (PARTITION BY device_id, date)
                  AND midnight + 86400000000 - epoch_us(ended) <= 1800000000) AS open
    FROM (SELECT *, (date - DATE '1970-01-01')::BIGINT * 86400000000 AS midnight FROM sub)
),
whole AS (SELECT DISTINCT date, device_id, fw, hw FROM marked WHERE NOT open),
whole_day AS (SELECT date, device_id, list(fw) AS fws, list(hw) AS hws FROM whole GROUP BY ALL)
SELECT date, 'length' AS kind, NULL::VARCHAR AS device_id, fw, hw,
       NULL::TIMESTAMPTZ AS started, NULL::TIMESTAMPTZ AS ended,
       epoch(ended - started) / 60 AS minutes, count(*) AS n, NULL::BOOLEAN AS first_all,
       NULL::BOOLEAN AS first_fw, NULL::BOOLEAN AS first_hw, NULL::BOOLEAN AS whole_all,
       NULL::BOOLEAN AS whole_fw, NULL::BOOLEAN AS whole_hw
FROM marked WHERE NOT open GROUP BY ALL
UNION ALL
SELECT date, 'device', device_id, fw, hw, NULL, NULL, NULL, 0,
       row_number() OVER (PARTITION BY date, device_id ORDER BY fw, hw) = 1,
       row_number() OVER (PARTITION BY date, device_id, fw ORDER BY hw) = 1,
       row_number() OVER (PARTITION BY date, device_id, hw ORDER BY fw) = 1, NULL, NULL, NULL
FROM whole
UNION ALL
SELECT m.date, 'open', m.device_id, m.fw, m.hw, started, ended,
       epoch(ended - started) / 60, 1, NULL, NULL, NULL, w.device_id IS NOT NULL,
       coalesce(list_contains(w.fws, m.fw), false), coalesce(list_contains(w.hws, m.hw), false)
FROM marked m LEFT JOIN whole_day w USING (date, device_id) WHERE open;

-- rollup: experiment_reports
-- the variants devices reported applying (setting_changed "experiment.<key>"), with when
SELECT date, device_id, substr(name, 12) AS experiment, value AS variant, ts
FROM {events} WHERE event = 'setting_changed' AND name LIKE 'experiment.%';

-- rollup: funnel_days
-- The dashboard's funnel (analytics.DEFAULT_FUNNEL, the funnel metric's default steps)
-- per device and day: the day's first time of each step (f1, f2, f3), and the first time
-- of a step at or after the day's first time of the step before it: f2a1 (step 2 at or
-- after f1), f3a2 (step 3 at or after f2) and f3a2a1 (step 3 at or after f2a1). That is
-- all the funnel needs: a device's step 1 is its first day's f1; its step 2 that day's
-- f2a1 or a later day's f2; its step 3 on step 2's day f3a2a1 or f3a2, or a later day's
-- f3. So the funnel reads one row per device-day instead of every step event.
-- One GROUP BY: each day's times of steps 2 and 3 gathered into short lists, filtered
-- against the day's first times, where joining the events back to those took two more
-- passes (and most of the time of a day computed from raw rows).
WITH firsts AS (
    SELECT date, device_id, min(ts) FILTER (WHERE {funnel_is1}) AS f1,
           min(ts) FILTER (WHERE {funnel_is2}) AS f2, min(ts) FILTER (WHERE {funnel_is3}) AS f3,
           list(ts) FILTER (WHERE {funnel_is2}) AS t2, list(ts) FILTER (WHERE {funnel_is3}) AS t3
    FROM {events} WHERE {funnel_is1} OR {funnel_is2} OR {funnel_is3}
    GROUP BY ALL
),
after AS (
    SELECT date, device_id, f1, f2, f3, t3,
           list_min(list_filter(t2, lambda x: x >= f1)) AS f2a1,
           list_min(list_filter(t3, lambda x: x >= f2)) AS f3a2
    FROM firsts
)
SELECT date, device_id, f1, f2, f3, f2a1, f3a2,
       list_min(list_filter(t3, lambda x: x >= f2a1)) AS f3a2a1
FROM after;
