-- Product metrics over the deduplicated `readings` and `events` views.
--
-- Days are UTC dates (the `date` partition column), whatever the client's time zone;
-- weeks start on Monday. Every metric is a table macro with named parameters
--   since := DATE, until := DATE   (inclusive; default: everything)
--   segment_by := 'all' | 'fw' | 'hw' | 'variant:KEY' | 'attr:NAME'   (firmware version,
--                 hardware model, the device's variant in experiment KEY ('variant:KEY:0.2'
--                 when B's planned share is not one half), or the value of its attribute
--                 NAME on that day (`fleetpulse devices set/import/export`))
-- e.g. SELECT * FROM active_devices(since := DATE '2026-01-01', segment_by := 'fw').
-- A metric is declared by a line "-- metric: NAME: description" before its macro;
-- `fleetpulse metrics --list` and the catalog's comments come from those lines, so each
-- description states the metric's choices in one line.
--
-- Attribution, one rule per family, numerator and denominator alike:
--   activity (active_devices, active_days_per_week, firmware_rollout): a device-day
--     counts under the firmware and model of the device's last record that day, so the
--     segments of a day add up to the fleet;
--   health and features (fleet_health, feature_adoption): each record counts under the
--     firmware that sent it, and a device under every firmware it ran that day (a crash
--     on 2.0 before a rollback to 1.0 is a 2.0 crash, on a 2.0 device-day);
--   sessions: a session counts under the firmware of its first event.
-- Every window is UTC epoch arithmetic (a day is 86,400 s), whatever the client's zone.

-- usage_events: events a person caused (the contract's usage events)
CREATE OR REPLACE VIEW usage_events AS
SELECT * FROM events WHERE event IN ({usage_events});

-- devices: every device seen, its latest firmware and hardware, and its connection state
-- status: online/offline from the gateway's presence service, unknown without it.
-- last_seen: now while online, when it went offline, else the time of its last record.
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

-- device_days: one row per device and UTC day on which it sent anything. fw and hw are
-- those of its last record that day (a device updated mid-day counts on the new
-- version); active means it sent at least one usage event that day.
-- The rollup_* views hold per-day aggregates (analytics/rollups.sql): from compaction's
-- rollups for compacted days, computed from raw rows for the others. One rollup per
-- device, day and firmware serves this and the health metrics: over raw rows, one pass.
CREATE OR REPLACE VIEW device_days AS
SELECT device_id, date AS day, fw, hw, day_records::BIGINT AS records,
       day_usage_events::BIGINT AS usage_events, day_usage_events > 0 AS active
FROM rollup_firmware_days WHERE last_of_day;
-- One row of the rollup per device-day: the rollup holds the day's totals on each row
-- and marks the last, so this view is a filter, not an aggregation (which was most of
-- what the activity metrics cost).

-- utc_day: the UTC date of a timestamp, whatever the session's time zone
CREATE OR REPLACE MACRO utc_day(ts) AS
    DATE '1970-01-01' + (epoch_us(ts) // 86400000000)::INTEGER;

-- interpolate: a quantile between the values at ranks floor(h) and floor(h) + 1, as
-- quantile_cont computes it (hi is NULL past the last rank, where the weight is 0)
CREATE OR REPLACE MACRO interpolate(lo, hi, h) AS
    lo + (coalesce(hi, lo) - lo) * (h - floor(h));

-- activations: a device is activated on the first day it sent anything; its cohort
-- is that day's week; last_day is the last day it sent anything. Read from the rollup
-- device_days is built from (a device-day is there iff it has a row there), not through
-- device_days' own aggregation: half the time; the covered days from their state
-- (analytics/states.sql), the later ones from the rollup.
CREATE OR REPLACE VIEW activations AS
SELECT device_id, min(activation_day) AS activation_day,
       date_trunc('week', min(activation_day))::DATE AS cohort_week, max(last_day) AS last_day
FROM (FROM state_activations
      UNION ALL
      SELECT device_id, min(date), max(date) FROM rollup_firmware_days
      WHERE date > state_through() GROUP BY device_id)
GROUP BY device_id;

-- active_weeks: the weeks (Monday to Sunday, UTC) in which each device was active; what
-- lifecycle and retention start from (the dashboard computes it once for both).
CREATE OR REPLACE VIEW active_weeks AS
-- a device-day is active iff one of its firmware rows has a usage event
SELECT DISTINCT device_id, week FROM (
    FROM state_active_weeks
    UNION ALL
    SELECT device_id, date_trunc('week', date)::DATE FROM rollup_firmware_days
    WHERE usage_events > 0 AND date > state_through()
);

-- experiment_variant: a device's variant in experiment `key`. bucket = the first 8 hex
-- digits of sha256("<key>:<device_id>") as an integer, mod 10000; variant B when bucket <
-- share_b * 10000, else A. Firmware computes the same with hashlib.sha256
-- (docs/experiments.md, analytics/assignment.py).
CREATE OR REPLACE MACRO experiment_bucket(key, device_id) AS
    ('0x' || left(sha256(key || ':' || device_id), 8))::UBIGINT % 10000;
CREATE OR REPLACE MACRO experiment_variant(key, device_id, share_b) AS
    CASE WHEN experiment_bucket(key, device_id) < share_b * 10000 THEN 'B' ELSE 'A' END;

-- experiment_reports: the variant each device reported applying, per experiment: the
-- firmware sends setting_changed "experiment.<key>" with the variant it applied (a
-- forced "A"/"B" from the config topic, or its hash). The last report counts, from when
-- it was sent.
CREATE OR REPLACE VIEW experiment_reports AS
SELECT experiment, device_id, arg_max(variant, ts) AS variant, max(ts) AS applied_at
FROM rollup_experiment_reports GROUP BY ALL;

-- device_variant: what the device reported applying, else the hash assignment. The
-- reports of the experiment are looked up in one map built once per query: a subquery
-- per row was planned as a join for every row of every metric, segmented by variant or
-- not (bench/RESULTS.md, "Issue 14"). Without an experiment key (segment_of not
-- segmenting by variant) the filter is constant false and the reports are not read.
CREATE OR REPLACE MACRO device_variant(exp_key, dev, share) AS
    coalesce((SELECT map_from_entries(list({'k': r.device_id, 'v': r.variant}))
              FROM experiment_reports r WHERE exp_key <> '' AND r.experiment = exp_key)[dev],
             experiment_variant(exp_key, dev, share));

-- device_attribute: the value of attribute `attr_name` (registry attributes, exported
-- into the dataset: the device_attributes view) a device had on a UTC day, '(none)'
-- without one. A change counts from the day it was made. Looked up in one map per query,
-- as device_variant does; without a name the attributes are not read.
CREATE OR REPLACE MACRO device_attribute(attr_name, dev, on_day) AS
    coalesce(list_filter(
        (SELECT map_from_entries(list({'k': device_id, 'v': spans}))
         FROM (SELECT device_id,
                      list({'f': utc_day(valid_from),
                            't': coalesce(utc_day(valid_to), DATE '9999-12-31'),
                            'v': value}) AS spans
               FROM device_attributes WHERE attr_name <> '' AND name = attr_name
               GROUP BY device_id))[dev],
        lambda s: s.f <= on_day AND on_day < s.t)[1].v, '(none)');

-- segment_of: the segment a row counts in (its day picks a device's attribute). Rows that
-- no longer name their device (counts rolled up per firmware and model) cannot be split
-- by experiment variant or attribute: an error says so rather than counting them all in
-- one segment.
CREATE OR REPLACE MACRO segment_of(segment_by, fw, hw, device_id, on_day) AS
    CASE WHEN segment_by = 'fw' THEN fw
         WHEN segment_by = 'hw' THEN hw
         WHEN (segment_by LIKE 'variant:%' OR segment_by LIKE 'attr:%') AND device_id IS NULL
             THEN error('no breakdown by experiment variant or attribute: this metric counts '
                        || 'per firmware and model, not per device (break it down by fw or hw)')
         WHEN segment_by LIKE 'variant:%' THEN
             device_variant(split_part(segment_by, ':', 2), device_id,
                            coalesce(TRY_CAST(nullif(split_part(segment_by, ':', 3), '')
                                              AS DOUBLE), 0.5))
         WHEN segment_by LIKE 'attr:%' THEN
             device_attribute(split_part(segment_by, ':', 2), device_id, on_day)
         ELSE 'all' END;

-- segment_flag: of three flags a rollup computes per device and day for the whole fleet,
-- per firmware and per model (e.g. first_all / first_fw / first_hw, marking one row per
-- device, day and segment), the one for segment_by: a variant or attribute is the same
-- on every row of a device-day, so it takes the whole fleet's.
CREATE OR REPLACE MACRO segment_flag(segment_by, all_flag, fw_flag, hw_flag) AS
    CASE segment_by WHEN 'fw' THEN fw_flag WHEN 'hw' THEN hw_flag ELSE all_flag END;

-- activity_from: the first day active_devices computes: with a state, for the whole
-- fleet or per firmware or model, the day after its last covered one (the days before
-- come from the state: a day's counts depend on that day and the 29 before it), else
-- every day
CREATE OR REPLACE MACRO activity_from(segment_by) AS
    CASE WHEN has_state() AND state_breakdown(segment_by) THEN state_through() + 1
         ELSE DATE '1970-01-01' END;

-- metric: active_devices: DAU, WAU and MAU (devices with a usage event that UTC day, in the 7 and 30 days ending on it) and stickiness (DAU/MAU), a row for every day from the first to the last day of data; segments by the day's last firmware
CREATE OR REPLACE MACRO active_devices(since := DATE '1970-01-01', until := DATE '2999-12-31',
                                       segment_by := 'all') AS TABLE
-- Two ways, one per call (the other's condition is a constant false, and DuckDB drops
-- its scans). With a state: the covered days' rows from it, and each later day counted
-- from each (device, segment) pair's last active day up to it, the state's or a later
-- one (few days, so a join of days and pairs). Otherwise over every day, from where
-- each count changes, per run of consecutive active days: a pair active on days a..b,
-- next active on day n, counts in DAU on [a, b+1), in WAU on [a, min(n, b+7)) and in
-- MAU on [a, min(n, b+30)); a running sum of those +1/-1 over the days gives the counts.
-- Each pair's days are gathered into a sorted list (a few dozen dates per pair: lead()
-- over a window partitioned by the pair sorted every active device-day by device name,
-- most of this macro's time at full scale) and cut into runs there: a device active
-- most days has a few runs, where a change per active day made four rows per device-day
-- to sum (bench/macro_ab.py at full scale: 0.135 -> 0.119 s; the runs not
-- materialised, 0.189 -> 0.225 s).
WITH bounds AS (
    SELECT greatest(min(date), since) AS lo, least(max(date), until) AS hi
    FROM rollup_firmware_days
),
all_days AS (
    SELECT unnest(range(lo, hi + 1, INTERVAL 1 DAY))::DATE AS day FROM bounds WHERE lo <= hi
),
days AS (SELECT day FROM all_days WHERE day >= activity_from(segment_by)),
pairs AS (
    -- device_days has one row per device and day already: no DISTINCT
    SELECT segment, list(day ORDER BY day) AS days FROM (
        SELECT device_id, segment_of(segment_by, fw, hw, device_id, day) AS segment, day
        FROM device_days WHERE active AND activity_from(segment_by) = DATE '1970-01-01'
    ) GROUP BY device_id, segment
),
runs AS MATERIALIZED (  -- read four times below
    -- unnesting a list one shorter pads it with NULL: the last run has no next
    SELECT segment, unnest(starts) AS a, unnest(ends) AS b, unnest(starts[2:]) AS n
    FROM (SELECT segment,
                 list_filter(days, lambda x, i: i = 1 OR days[i - 1] + 1 != x) AS starts,
                 list_filter(days, lambda x, i: i = len(days) OR days[i + 1] != x + 1) AS ends
          FROM pairs)
),
changes AS (
    SELECT segment, day, sum(dau) AS dau, sum(wau) AS wau, sum(mau) AS mau FROM (
        SELECT segment, a AS day, 1 AS dau, 1 AS wau, 1 AS mau FROM runs
        UNION ALL SELECT segment, b + 1, -1, 0, 0 FROM runs
        UNION ALL SELECT segment, least(coalesce(n, b + 7), b + 7), 0, -1, 0 FROM runs
        UNION ALL SELECT segment, least(coalesce(n, b + 30), b + 30), 0, 0, -1 FROM runs
        UNION ALL SELECT s.segment, d.day, 0, 0, 0
        FROM (SELECT DISTINCT segment FROM pairs) s, days d
    ) GROUP BY ALL
),
running AS (
    SELECT day, segment,
           sum(dau) OVER w AS dau, sum(wau) OVER w AS wau, sum(mau) OVER w AS mau
    FROM changes
    WINDOW w AS (PARTITION BY segment ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
latest AS (
    SELECT segment, device_id, day FROM state_last_active
    WHERE segment_by_of = segment_by AND activity_from(segment_by) > DATE '1970-01-01'
    UNION ALL
    SELECT segment_of(segment_by, fw, hw, device_id, day), device_id, day FROM device_days
    WHERE active AND day >= activity_from(segment_by)
        AND activity_from(segment_by) > DATE '1970-01-01'
),
later_segments AS (
    SELECT segment FROM latest
    UNION SELECT segment FROM state_activity WHERE segment_by_of = segment_by
),
later AS (
    SELECT d.day, l.segment,
           count(DISTINCT l.device_id) FILTER (WHERE l.day = d.day) AS dau,
           count(DISTINCT l.device_id) FILTER (WHERE l.day > d.day - 7) AS wau,
           count(DISTINCT l.device_id) AS mau
    FROM days d JOIN latest l ON l.day <= d.day AND l.day > d.day - 30
    GROUP BY ALL
)
SELECT r.day, r.segment, r.dau::BIGINT AS dau, r.wau::BIGINT AS wau, r.mau::BIGINT AS mau,
       round(r.dau / nullif(r.mau, 0), 4) AS stickiness
FROM running r
WHERE r.day BETWEEN since AND until AND r.day IN (SELECT day FROM days)
UNION ALL
SELECT day, segment, dau, wau, mau, stickiness FROM state_activity
WHERE segment_by_of = segment_by AND day BETWEEN since AND until
UNION ALL
SELECT d.day, s.segment, coalesce(l.dau, 0), coalesce(l.wau, 0), coalesce(l.mau, 0),
       round(l.dau / nullif(l.mau, 0), 4)
FROM later_segments s CROSS JOIN days d
LEFT JOIN later l ON l.day = d.day AND l.segment = s.segment
WHERE d.day BETWEEN since AND until
UNION ALL
-- a segment first active after the covered days has a row of zeros on each of them
SELECT d.day, p.segment, 0, 0, 0, NULL
FROM (SELECT segment FROM latest
      EXCEPT SELECT segment FROM state_activity WHERE segment_by_of = segment_by) p,
     all_days d
WHERE d.day < activity_from(segment_by)
ORDER BY day, segment;

-- metric: active_days_per_week: how many devices were active on 1, 2, ... 7 days of each week (Monday to Sunday, UTC), in the segment of their last active day
CREATE OR REPLACE MACRO active_days_per_week(since := DATE '1970-01-01',
                                             until := DATE '2999-12-31',
                                             segment_by := 'all') AS TABLE
WITH per_device AS (
    SELECT date_trunc('week', day)::DATE AS week, device_id,
           arg_max(segment_of(segment_by, fw, hw, device_id, day), day) AS segment,
           count(*) AS active_days
    FROM device_days WHERE active AND day BETWEEN since AND until
    GROUP BY ALL
)
SELECT week, segment, active_days, count(*) AS devices
FROM per_device GROUP BY ALL ORDER BY week, segment, active_days;

-- weeks_held_from / weeks_held_through: the first Monday from `since`, and the last
-- Sunday up to `until` and the state's last covered day: the days of the weeks
-- lifecycle and crash_free_weeks read from their states
CREATE OR REPLACE MACRO weeks_held_from(since) AS date_trunc('week', since + 6)::DATE;
CREATE OR REPLACE MACRO weeks_held_through(until) AS
    date_trunc('week', least(until, state_through()) + 1)::DATE - 1;

-- metric: lifecycle: per week, new (activated that week: the retention cohort), returning (active that week and the one before), resurrecting (active, not the week before, activated earlier) and dormant (active the week before, not this one) devices
CREATE OR REPLACE MACRO lifecycle(since := DATE '1970-01-01', until := DATE '2999-12-31')
    AS TABLE
-- A week's row depends on that week and the one before: the weeks a state covers whole
-- come from it, the later ones are computed (weeks_held_through is before every week
-- without a state)
WITH active AS MATERIALIZED (  -- joined twice below
    FROM active_weeks WHERE week >= weeks_held_through(DATE '2999-12-31') - 6
),
first_week AS (SELECT device_id, cohort_week AS first_week FROM activations),
weeks AS (
    SELECT DISTINCT date_trunc('week', date)::DATE AS week FROM rollup_firmware_days
    WHERE date > weeks_held_through(DATE '2999-12-31')
),
-- two equi-joins of the (week, device) grid where two correlated EXISTS took longer
grid AS (
    SELECT w.week, f.device_id, f.first_week,
           a.week IS NOT NULL AS now_active, b.week IS NOT NULL AS before_active
    FROM weeks w JOIN first_week f ON w.week >= f.first_week
    LEFT JOIN active a ON a.device_id = f.device_id AND a.week = w.week
    LEFT JOIN active b ON b.device_id = f.device_id AND b.week = (w.week - 7)::DATE
)
SELECT week,
       count(*) FILTER (WHERE week = first_week) AS new_devices,
       count(*) FILTER (WHERE now_active AND before_active) AS returning_devices,
       count(*) FILTER (WHERE now_active AND NOT before_active AND week > first_week)
           AS resurrecting_devices,
       count(*) FILTER (WHERE NOT now_active AND before_active) AS dormant_devices
FROM grid WHERE week BETWEEN date_trunc('week', since) AND until
GROUP BY week
UNION ALL
SELECT * FROM state_lifecycle WHERE week BETWEEN date_trunc('week', since) AND until
ORDER BY week;

-- metric: retention: cohorts by activation week (the week of a device's first record) x weeks since, the share active in week N and in week N or later
CREATE OR REPLACE MACRO retention(since := DATE '1970-01-01', until := DATE '2999-12-31')
    AS TABLE
WITH cohort AS (
    SELECT device_id, cohort_week FROM activations
    WHERE activation_day BETWEEN since AND until
),
last_week AS (SELECT max(date_trunc('week', date))::DATE AS w FROM rollup_firmware_days),
sizes AS (SELECT cohort_week, count(*) AS cohort_size FROM cohort GROUP BY ALL),
-- a cohort only has the columns it has reached
grid AS (
    SELECT s.cohort_week, s.cohort_size, n.range AS weeks_since
    FROM sizes s, range(0, 105) n, last_week l
    WHERE s.cohort_week + (7 * n.range)::INTEGER <= l.w
),
hits AS (
    SELECT c.cohort_week, c.device_id, ((a.week - c.cohort_week) / 7)::INTEGER AS weeks_since
    FROM cohort c JOIN active_weeks a USING (device_id)
),
-- hits holds each device at most once per week: counts, not distinct counts, and
-- "in week N or later" from each device's last week, so the grid joins a few hundred
-- rows instead of every hit of its cohort (1.15 s -> 0.60 s at full scale)
in_week AS (SELECT cohort_week, weeks_since, count(*) AS n FROM hits GROUP BY ALL),
reach AS (
    SELECT cohort_week, last_week_since, count(*) AS n FROM (
        SELECT cohort_week, device_id, max(weeks_since) AS last_week_since
        FROM hits GROUP BY ALL
    ) GROUP BY ALL
),
or_after AS (
    SELECT g.cohort_week, g.weeks_since, sum(r.n)::BIGINT AS n
    FROM grid g JOIN reach r ON r.cohort_week = g.cohort_week
        AND r.last_week_since >= g.weeks_since
    GROUP BY ALL
)
SELECT g.cohort_week, g.cohort_size, g.weeks_since,
       coalesce(i.n, 0) AS active_in_week,
       coalesce(o.n, 0) AS active_in_or_after,
       round(coalesce(i.n, 0) / g.cohort_size, 4) AS retention,
       round(coalesce(o.n, 0) / g.cohort_size, 4) AS unbounded_retention
FROM grid g
LEFT JOIN in_week i USING (cohort_week, weeks_since)
LEFT JOIN or_after o USING (cohort_week, weeks_since)
ORDER BY g.cohort_week, g.weeks_since;

-- metric: feature_adoption: per feature, devices that used it, share of the devices active in the period, median days from activation to first use, uses per device; a use counts under the firmware that sent it
CREATE OR REPLACE MACRO feature_adoption(since := DATE '1970-01-01',
                                         until := DATE '2999-12-31',
                                         segment_by := 'all') AS TABLE
-- The whole fleet over all the covered days: from the states (analytics/states.sql) and
-- the later days' rollup rows.
WITH active AS (
    SELECT segment, count(DISTINCT device_id) AS n FROM (
        SELECT 'all' AS segment, device_id FROM state_ever_active
        WHERE segment_by = 'all' AND state_covers(since, until)
        UNION ALL
        SELECT segment_of(segment_by, fw, hw, device_id, date), device_id
        FROM rollup_firmware_days WHERE usage_events > 0 AND date BETWEEN since AND until
            AND uncovered(date, segment_by = 'all' AND state_covers(since, until))
    ) GROUP BY ALL
),
per_device AS (
    SELECT segment, feature, device_id, min(first_use) AS first_use, sum(uses) AS uses,
           sum(days_used) AS days_used
    FROM (
        SELECT 'all' AS segment, feature, device_id, first_use, uses, days_used
        FROM state_features WHERE segment_by = 'all' AND state_covers(since, until)
        UNION ALL
        SELECT segment_of(segment_by, fw, hw, device_id, date), feature, device_id,
               min(date), sum(uses),
               count(*) FILTER (WHERE segment_flag(segment_by, first_all, first_fw, first_hw))
        FROM rollup_feature_days WHERE date BETWEEN since AND until
            AND uncovered(date, segment_by = 'all' AND state_covers(since, until))
        GROUP BY ALL
    ) GROUP BY ALL
)
SELECT p.feature, p.segment,
       count(*) AS devices,
       round(count(*) / any_value(a.n), 4) AS share_of_active,
       median(p.first_use - act.activation_day) AS median_days_to_first_use,
       round(avg(p.uses), 2) AS uses_per_device,
       round(sum(p.uses) / sum(p.days_used), 2) AS uses_per_day_used
FROM per_device p
JOIN active a USING (segment)
JOIN activations act USING (device_id)
GROUP BY p.feature, p.segment ORDER BY p.segment, devices DESC, p.feature;

-- metric: feature_usage_daily: per UTC day and feature, devices that used it, uses, share of that day's active devices
CREATE OR REPLACE MACRO feature_usage_daily(since := DATE '1970-01-01',
                                            until := DATE '2999-12-31') AS TABLE
-- from the feature_days rollup: a device's row per day and feature flagged first_all,
-- where a DISTINCT over the feature_used events read every one of them
WITH dau AS (
    SELECT day, count(*) AS active_devices FROM device_days
    WHERE active AND day BETWEEN since AND until GROUP BY day
)
SELECT f.date AS day, f.feature,
       count(*) FILTER (WHERE f.first_all) AS devices,
       sum(f.uses)::BIGINT AS uses,
       round(count(*) FILTER (WHERE f.first_all) / any_value(d.active_devices), 4)
           AS share_of_active
FROM rollup_feature_days f JOIN dau d ON d.day = f.date
WHERE f.date BETWEEN since AND until
GROUP BY f.date, f.feature ORDER BY day, f.feature;

-- funnel_step_is: whether an event is a funnel step: an event name, or feature_used:<feature>
-- for one feature. With the step a constant (a macro's argument) this folds to a plain
-- comparison the scan can use, where matching 'feature_used:' || feature concatenated
-- a string for every feature_used row read.
CREATE OR REPLACE MACRO funnel_step_is(step, event, feature) AS
    CASE WHEN starts_with(step, 'feature_used:')
         THEN event = 'feature_used' AND feature = step[14:]
         ELSE event = step END;

-- funnel_rolled_up: whether a funnel's steps are the dashboard's, which rollup_funnel_days
-- holds per device and day (analytics.DEFAULT_FUNNEL), and compaction has stored some of
-- it: computed from raw rows on every day (a dataset never compacted, or in object
-- storage) it is slower than the events scan (0.37 -> 0.69 s at full scale,
-- bench/RESULTS.md). A constant once the funnel macro is expanded.
CREATE OR REPLACE MACRO funnel_rolled_up(step1, step2, step3) AS
    step1 = {funnel_step1} AND step2 = {funnel_step2} AND step3 = {funnel_step3}
    AND rollup_stored('funnel_days');

-- funnel_firsts: per device of the dashboard's funnel (rollup_funnel_days) from since to
-- until, its first step 1 (t1, on day d1), the first step 2 at or after it (t2, d2) and
-- the first step 3 at or after that (t3, d3), whatever the window (the funnel applies
-- it); with use_state the funnel state's rows (analytics/states.sql) stand for the
-- covered days. No rows unless enabled: a constant the funnel passes, so DuckDB drops
-- these scans when its steps are others.
CREATE OR REPLACE MACRO funnel_firsts(since, until, use_state, enabled) AS TABLE
WITH rolled AS MATERIALIZED (
    SELECT * FROM state_funnel WHERE use_state AND enabled
    UNION ALL BY NAME
    SELECT * FROM rollup_funnel_days WHERE enabled AND date BETWEEN since AND until
        AND uncovered(date, use_state)
),
r1 AS (
    SELECT device_id, min(f1) AS t1, min(date) FILTER (WHERE f1 IS NOT NULL) AS d1
    FROM rolled GROUP BY device_id HAVING t1 IS NOT NULL
),
r2 AS (
    SELECT device_id, any_value(t1) AS t1, any_value(d1) AS d1, min(c) AS t2,
           arg_min(date, c) AS d2
    FROM (SELECT device_id, t1, d1, date,
                 CASE WHEN date = d1 THEN f2a1 WHEN date > d1 THEN f2 END AS c
          FROM r1 JOIN rolled USING (device_id))
    GROUP BY device_id
)
SELECT device_id, any_value(t1) AS t1, any_value(d1) AS d1, any_value(t2) AS t2,
       any_value(d2) AS d2, min(c) AS t3, arg_min(date, c) AS d3
FROM (SELECT device_id, t1, d1, t2, d2, date,
             CASE WHEN date = d2 AND d2 = d1 THEN f3a2a1 WHEN date = d2 THEN f3a2
                  WHEN date > d2 THEN f3 END AS c
      FROM r2 JOIN rolled USING (device_id))
GROUP BY device_id;

-- metric: funnel: devices reaching each of three ordered steps within window_days x 86,400 s of their first step 1, and median minutes between steps
CREATE OR REPLACE MACRO funnel(step1 := {funnel_step1}, step2 := {funnel_step2},
                               step3 := {funnel_step3}, window_days := 14,
                               since := DATE '1970-01-01', until := DATE '2999-12-31') AS TABLE
-- a step is an event name, or feature_used:<feature> for one feature
-- Two ways to the same answer, one per call (the other's condition is a constant false
-- once the macro is expanded, and DuckDB drops its scans): the dashboard's steps (the
-- defaults) from rollup_funnel_days' first times per device and day (rollups.sql says
-- why they suffice) or, over all the covered days, the funnel state; any other steps
-- from the events.
WITH firsts AS (
    SELECT *, CAST(window_days AS BIGINT) * 86400000000 AS window_us
    FROM funnel_firsts(since, until, state_covers(since, until),
                       funnel_rolled_up(step1, step2, step3))
),
r1 AS (SELECT t1 FROM firsts),
r2 AS (SELECT t1, t2 FROM firsts WHERE epoch_us(t2) <= epoch_us(t1) + window_us),
r3 AS (
    SELECT t2, t3 FROM firsts WHERE epoch_us(t2) <= epoch_us(t1) + window_us
        AND epoch_us(t3) <= epoch_us(t1) + window_us
),
-- Only the events of the three steps are read: the event names (a feature step's is
-- feature_used) are constants once the macro is expanded, so the filter reaches the scan
-- (0.89 -> 0.80 s at full scale). Kept as one CTE: a scan per step, each filtered to its
-- own event, took 1.0 s, and the CTE not materialised 1.35 s.
ev AS (
    -- which steps each event is, as flags: the CTE holds no event or feature strings
    SELECT device_id, ts, funnel_step_is(step1, event, feature) AS is1,
           funnel_step_is(step2, event, feature) AS is2,
           funnel_step_is(step3, event, feature) AS is3
    FROM events WHERE date BETWEEN since AND until
        AND NOT funnel_rolled_up(step1, step2, step3)
        AND event IN (split_part(step1, ':', 1), split_part(step2, ':', 1),
                      split_part(step3, ':', 1))
),
s1 AS (
    SELECT device_id, min(ts) AS t1 FROM ev
    WHERE is1 GROUP BY device_id
),
s2 AS (
    SELECT s1.device_id, s1.t1, min(ev.ts) AS t2
    FROM s1 JOIN ev ON ev.device_id = s1.device_id
        AND ev.is2
        AND ev.ts >= s1.t1
        AND epoch_us(ev.ts) <= epoch_us(s1.t1) + CAST(window_days AS BIGINT) * 86400000000
    GROUP BY s1.device_id, s1.t1
),
s3 AS (
    SELECT s2.device_id, s2.t2, min(ev.ts) AS t3
    FROM s2 JOIN ev ON ev.device_id = s2.device_id
        AND ev.is3
        AND ev.ts >= s2.t2
        AND epoch_us(ev.ts) <= epoch_us(s2.t1) + CAST(window_days AS BIGINT) * 86400000000
    GROUP BY s2.device_id, s2.t2
),
reached1 AS (SELECT t1 FROM r1 UNION ALL SELECT t1 FROM s1),
reached2 AS (SELECT t1, t2 FROM r2 UNION ALL SELECT t1, t2 FROM s2),
reached3 AS (SELECT t2, t3 FROM r3 UNION ALL SELECT t2, t3 FROM s3)
SELECT 1 AS step, step1 AS name, count(*) AS devices,
       NULL::DOUBLE AS median_minutes_from_previous FROM reached1
UNION ALL
SELECT 2, step2, count(*), median(epoch(t2 - t1) / 60) FROM reached2
UNION ALL
SELECT 3, step3, count(*), median(epoch(t3 - t2) / 60) FROM reached3
ORDER BY step;

-- session_chains: the open sub-runs of rollup_session_parts (sub-runs at day edges) dated
-- lo..until, chained: a sub-run continues the previous day's last one when it starts 30
-- minutes or less after that one ended (only a day's last sub-run can end that close to
-- midnight). A chain's fw, hw and whole_* flags are its first sub-run's; last_date is its
-- last sub-run's day. With use_state, the sessions state's chains that reach the end of
-- the day before its last covered day (analytics/states.sql) stand for the days before.
CREATE OR REPLACE MACRO session_chains(lo, until, use_state) AS TABLE
WITH open AS (
    SELECT device_id, date, started, ended, fw, hw, whole_all, whole_fw, whole_hw
    FROM rollup_session_parts WHERE kind = 'open' AND date BETWEEN lo AND until
    UNION ALL BY NAME
    SELECT device_id, date, started, ended, fw, hw, whole_all, whole_fw, whole_hw
    FROM state_session_chains WHERE use_state
),
-- Few sub-runs link, so the chains are numbered among the linked sub-runs alone, where
-- two windows sorted every open sub-run per device (bench/RESULTS.md, "What a PM waits
-- for at full scale, fourth measurement").
links AS (
    -- microsecond arithmetic: cheaper than intervals
    SELECT p.device_id, p.started, q.started AS previous_started
    FROM open p JOIN open q ON q.device_id = p.device_id AND q.date = p.date - 1
        AND epoch_us(p.started) - epoch_us(q.ended) <= 1800000000
),
in_links AS (
    SELECT device_id, started FROM links
    UNION SELECT device_id, previous_started FROM links
),
numbered AS (
    SELECT o.*, sum(CASE WHEN l.started IS NULL THEN 1 ELSE 0 END)
                    OVER (PARTITION BY o.device_id ORDER BY o.started
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS chain
    FROM open o SEMI JOIN in_links USING (device_id, started)
    LEFT JOIN links l USING (device_id, started)
)
SELECT device_id, started, ended, fw, hw, whole_all, whole_fw, whole_hw, date AS last_date
FROM open ANTI JOIN in_links USING (device_id, started)
UNION ALL
SELECT device_id, min(started), max(ended), arg_min(fw, started), arg_min(hw, started),
       arg_min(whole_all, started), arg_min(whole_fw, started), arg_min(whole_hw, started),
       max(date)
FROM numbered GROUP BY device_id, chain;

-- sessions_from: the first day the sessions metric computes from the rollups: with a state,
-- its last covered day (the days before come from the state) for the breakdowns it holds
CREATE OR REPLACE MACRO sessions_from(since, segment_by) AS
    CASE WHEN state_breakdown(segment_by) THEN greatest(since, state_through())
         ELSE since END;

-- metric: sessions: usage sessions (a gap over 30 minutes ends one; one over 24 h is cut at each 24 h from its start) per UTC day they started on; per device = per device that had a session that day; median and mean minutes
CREATE OR REPLACE MACRO sessions(since := DATE '1970-01-01', until := DATE '2999-12-31',
                                 segment_by := 'all') AS TABLE
-- A session belongs to the UTC day it started on. Whole sessions come counted per length
-- from rollup_session_parts; the "open" sub-runs at day edges are chained
-- (session_chains), and a chain longer than 24 h is cut into sessions of at most 24 h
-- from its start (an event at exactly 24 h ends the first), which needs its events.
-- For the whole fleet, per firmware or per model, the days before the last covered one
-- come from the sessions state (a session lasts 24 h at most, so their rows are final),
-- and the chains reaching into that day from its chains.
WITH merged AS (
    SELECT device_id, started, ended,
           segment_of(segment_by, fw, hw, device_id, utc_day(started)) AS segment,
           segment_flag(segment_by, whole_all, whole_fw, whole_hw) AS whole
    FROM session_chains(sessions_from(DATE '1970-01-01', segment_by), DATE '2999-12-31',
                        sessions_from(DATE '1970-01-01', segment_by) > DATE '1970-01-01')
),
long AS (SELECT * FROM merged WHERE epoch_us(ended) - epoch_us(started) > 86400000000),
long_days AS (
    SELECT DISTINCT unnest(range(utc_day(started), utc_day(ended) + 1, INTERVAL 1 DAY))::DATE
               AS d
    FROM long
),
cut AS (
    -- whole: unknown for a piece (it may start on another day than its chain)
    SELECT l.device_id, min(u.ts) AS started, max(u.ts) AS ended,
           arg_min(segment_of(segment_by, u.fw, u.hw, u.device_id, utc_day(u.ts)), u.ts)
               AS segment, NULL::BOOLEAN AS whole
    FROM long l JOIN usage_events u
        ON u.device_id = l.device_id AND u.ts BETWEEN l.started AND l.ended
    WHERE u.date IN (SELECT d FROM long_days)
    GROUP BY l.device_id, l.started,
             greatest(epoch_us(u.ts) - epoch_us(l.started) - 1, 0) // 86400000000
),
chain_sessions AS (
    SELECT utc_day(started) AS day, device_id, segment, whole,
           epoch(ended - started) / 60 AS minutes
    FROM (SELECT device_id, started, ended, segment, whole FROM merged
          WHERE epoch_us(ended) - epoch_us(started) <= 86400000000
          UNION ALL SELECT * FROM cut)
    WHERE utc_day(started) BETWEEN sessions_from(since, segment_by) AND until
),
-- sessions counted per length (the same length may come in several rows); materialized,
-- since three steps below read it (bench/macro_ab.py: 0.87-0.92 of re-reading the rollup)
lengths AS MATERIALIZED (
    SELECT date AS day, segment_of(segment_by, fw, hw, NULL, date) AS segment, minutes, n
    FROM rollup_session_parts WHERE kind = 'length'
        AND date BETWEEN sessions_from(since, segment_by) AND until
    UNION ALL SELECT day, segment, minutes, count(*) FROM chain_sessions GROUP BY ALL
),
-- The median without sorting every length: running counts over whole-minute buckets
-- find the bucket holding each of the two middle ranks, and only that bucket's lengths
-- are sorted. Exact, and as quantile_cont interpolates.
buckets AS (
    SELECT day, segment, floor(minutes) AS bucket, sum(n) AS n FROM lengths GROUP BY ALL
),
bucket_upto AS (
    SELECT *, sum(n) OVER (PARTITION BY day, segment ORDER BY bucket
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto
    FROM buckets
),
totals AS (
    SELECT day, segment, sum(n) AS sessions, (sum(n) - 1)::DOUBLE * 0.5 AS h
    FROM buckets GROUP BY ALL
),
middle AS (
    SELECT t.day, t.segment, t.h, floor(t.h) + k.k AS rank
    FROM totals t, (SELECT unnest([0, 1]) AS k) k
),
middle_bucket AS (
    SELECT m.day, m.segment, m.h, m.rank, arg_min(b.bucket, b.bucket) AS bucket,
           arg_min(b.upto - b.n, b.bucket) AS before
    FROM middle m JOIN bucket_upto b
        ON b.day = m.day AND b.segment = m.segment AND b.upto > m.rank
    GROUP BY ALL
),
-- running counts inside the middle buckets only, from the count before each bucket
fine AS (
    SELECT l.day, l.segment, b.bucket, l.minutes,
           b.before + sum(l.n) OVER (PARTITION BY l.day, l.segment, b.bucket ORDER BY l.minutes
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto
    FROM lengths l
    JOIN (SELECT DISTINCT day, segment, bucket, before FROM middle_bucket) b
        ON l.day = b.day AND l.segment = b.segment AND floor(l.minutes) = b.bucket
),
middle_values AS (
    SELECT m.day, m.segment, m.h, m.rank, min(f.minutes) AS v
    FROM middle_bucket m JOIN fine f
        ON f.day = m.day AND f.segment = m.segment AND f.bucket = m.bucket AND f.upto > m.rank
    GROUP BY ALL
),
medians AS (
    SELECT day, segment,
           interpolate(any_value(v) FILTER (WHERE rank = floor(h)),
                       any_value(v) FILTER (WHERE rank = floor(h) + 1), any_value(h))
               AS median_minutes
    FROM middle_values GROUP BY ALL
),
-- summed before the join: a few hundred rows join the medians instead of every length
per_day AS (
    SELECT day, segment, sessions, mean_minutes, median_minutes
    FROM (SELECT day, segment, sum(n) AS sessions, sum(minutes * n) / sum(n) AS mean_minutes
          FROM lengths GROUP BY ALL)
    JOIN medians USING (day, segment)
),
-- devices with a whole session that day, one flagged row each in the rollup, and the
-- devices whose sessions that day were all chained across midnight: the open sub-run a
-- chain starts with says whether its device had a whole session that day; a piece of a
-- chain cut at 24 h is looked up among the device rows of the days long chains cover
device_rows AS NOT MATERIALIZED (
    SELECT date AS day, segment_of(segment_by, fw, hw, device_id, date) AS segment, device_id
    FROM rollup_session_parts
    WHERE kind = 'device' AND date BETWEEN sessions_from(since, segment_by) AND until
        AND segment_flag(segment_by, first_all, first_fw, first_hw)
),
devices AS (
    SELECT day, segment, count(*) AS devices FROM (
        SELECT day, segment FROM device_rows
        UNION ALL
        SELECT day, segment FROM (SELECT DISTINCT day, segment, device_id FROM chain_sessions
                                  WHERE NOT whole)
        UNION ALL
        SELECT c.day, c.segment
        FROM (SELECT DISTINCT day, segment, device_id FROM chain_sessions
              WHERE whole IS NULL) c
        ANTI JOIN (FROM device_rows WHERE day IN (SELECT d FROM long_days)) d
            ON d.day = c.day AND d.segment = c.segment AND d.device_id = c.device_id
    ) GROUP BY ALL
)
SELECT day, segment, devices, sessions,
       round(sessions / devices, 3) AS sessions_per_device_day,
       round(median_minutes, 2) AS median_minutes, round(mean_minutes, 2) AS mean_minutes
FROM per_day JOIN devices USING (day, segment)
UNION ALL
SELECT day, segment, devices, sessions, sessions_per_device_day, median_minutes, mean_minutes
FROM state_sessions WHERE segment_by = segment_by_of AND day BETWEEN since AND until
ORDER BY day, segment;

-- metric: firmware_rollout: per UTC day, active devices on each firmware version (their last that day) and their share
CREATE OR REPLACE MACRO firmware_rollout(since := DATE '1970-01-01',
                                         until := DATE '2999-12-31') AS TABLE
-- a day's rows depend on that day alone: the covered days' from their state. The later
-- days' counts materialized: with the window in the same query, DuckDB (2.0.1) did not
-- push the date range into the scan and read every device-day
WITH later AS MATERIALIZED (
    SELECT day, fw, count(*) AS devices FROM device_days
    WHERE active AND day BETWEEN greatest(since, state_through() + 1) AND until
    GROUP BY day, fw
)
SELECT day, fw, devices, share FROM state_firmware_rollout WHERE day BETWEEN since AND until
UNION ALL
SELECT day, fw, devices, round(devices / sum(devices) OVER (PARTITION BY day), 4) AS share
FROM later ORDER BY day, fw;

-- crash_free_weeks: fleet_health's crash-free devices per firmware and week (Monday to
-- Sunday, UTC) from since to until (a week the range cuts counts its days in it): a
-- device counts in a week under each firmware it ran that week, crash-free if it had no
-- crash on it that week. The crashes of the firmware rollup's rows, as
-- device_health_rows has them, without its heartbeat spans and the join they need. Weeks
-- whose days the state covers and the range holds whole come from the state; the days
-- of other weeks from the rollup (what weeks_held gives is a constant: the scans skip
-- the state's days).
CREATE OR REPLACE MACRO crash_free_weeks(since := DATE '1970-01-01',
                                         until := DATE '2999-12-31') AS TABLE
WITH w AS (
    SELECT date_trunc('week', date)::DATE AS week, fw, device_id, sum(crashes) AS crashes
    FROM rollup_firmware_days WHERE date BETWEEN since AND until
        AND NOT date BETWEEN weeks_held_from(since) AND weeks_held_through(until)
    GROUP BY ALL
)
SELECT week, fw, count(*) AS devices, count(*) FILTER (WHERE crashes = 0) AS crash_free_devices
FROM w GROUP BY ALL
UNION ALL
SELECT week, fw, devices, crash_free_devices FROM state_crash_free_weeks
WHERE week BETWEEN weeks_held_from(since) AND weeks_held_through(until) - 6;


-- device_health_rows: per rollup row (device, UTC day, firmware, model) its segment,
-- crashes, reboots, heartbeats received and expected, records dropped, and day_row: one
-- row of each (segment, device, day) is marked, so device-days are counted without
-- grouping 900K rows by day first. Connectivity is a share: each row expects heartbeats
-- for the part of the day it covers, from midnight (from the first record on the
-- device's first day, or when it changed to this firmware) to the next firmware's first
-- record or the next midnight, at the interval the device reported; received heartbeats
-- count up to that many. Today is not over: nothing is expected past `as_of` (default
-- the current time), so a device sending all morning is not half disconnected at noon.
-- The latest record in the data would not do: when the whole fleet goes quiet (the
-- broker down), the outage would hide itself.
CREATE OR REPLACE MACRO device_health_rows(since := DATE '1970-01-01',
                                           until := DATE '2999-12-31',
                                           segment_by := 'fw', as_of := NULL) AS TABLE
WITH fw_days AS (
    SELECT f.*, segment_of(segment_by, f.fw, f.hw, f.device_id, f.date) AS segment,
           CASE WHEN f.first_of_day AND f.date > a.activation_day
                THEN (f.date - DATE '1970-01-01')::BIGINT * 86400000000
                ELSE epoch_us(f.first_ts) END AS span_from,
           least(coalesce(epoch_us(f.next_first_ts),
                          (f.date - DATE '1970-01-01' + 1)::BIGINT * 86400000000),
                 epoch_us(coalesce(as_of::TIMESTAMPTZ, current_timestamp))) AS span_to
    FROM rollup_firmware_days f JOIN activations a USING (device_id)
    WHERE f.date BETWEEN since AND until
),
expected AS (
    -- a device whose clock runs ahead can have sent after as_of: nothing expected then
    SELECT *, greatest(span_to - span_from, 0)
              / (coalesce(heartbeat_interval_s, {default_heartbeat_s}) * 1000000.0) AS expected
    FROM fw_days
)
SELECT segment, device_id, date AS day, crashes, reboots,
       least(heartbeats, expected) AS heartbeats, expected AS expected_heartbeats,
       records_dropped,
       segment_flag(segment_by, first_of_day, first_of_fw_day, first_of_hw_day) AS day_row
FROM expected;

-- device_health_days: the same per segment, device and UTC day: what the experiments'
-- guardrails, the rollout guard and explain add up
CREATE OR REPLACE MACRO device_health_days(since := DATE '1970-01-01',
                                           until := DATE '2999-12-31',
                                           segment_by := 'fw', as_of := NULL) AS TABLE
SELECT segment, device_id, day, sum(crashes) AS crashes, sum(reboots) AS reboots,
       sum(heartbeats) AS heartbeats, sum(expected_heartbeats) AS expected_heartbeats,
       sum(records_dropped) AS records_dropped
FROM device_health_rows(since := since, until := until, segment_by := segment_by,
                        as_of := as_of)
GROUP BY ALL;

-- health_from_state: whether fleet_health reads the health state (analytics/states.sql)
-- for the days before the last covered one: over all the covered days, per firmware,
-- model or the whole fleet, with as_of (default now) at or past the last covered day
CREATE OR REPLACE MACRO health_from_state(since, until, segment_by, as_of) AS
    state_covers(since, until) AND state_breakdown(segment_by)
    AND epoch_us(coalesce(as_of::TIMESTAMPTZ, current_timestamp))
        >= (state_through() - DATE '1970-01-01')::BIGINT * 86400000000;

-- metric: fleet_health: per firmware (default): devices, crash-free devices and share (no error event, no power_on with a crash reset cause), reboots per device-day, connectivity (heartbeats received / expected at the reported interval, default 3600 s, up to as_of, default now), records dropped; each record counts under the firmware that sent it
CREATE OR REPLACE MACRO fleet_health(since := DATE '1970-01-01', until := DATE '2999-12-31',
                                     segment_by := 'fw', as_of := NULL) AS TABLE
-- Over all the covered days, for the whole fleet, per firmware or per model, the days
-- before the last covered one from the health state, once as_of has reached that day
-- (their expected heartbeats are then complete); the rest from the rollup.
WITH per_device AS (
    SELECT segment, device_id, sum(device_days) AS device_days, sum(crashes) AS crashes,
           sum(reboots) AS reboots, sum(heartbeats) AS heartbeats,
           sum(expected_heartbeats) AS expected_heartbeats,
           sum(records_dropped) AS records_dropped
    FROM (
        SELECT segment, device_id, device_days, crashes, reboots, heartbeats,
               expected_heartbeats, records_dropped
        FROM state_health
        WHERE health_from_state(since, until, segment_by, as_of) AND segment_by_of = segment_by
        UNION ALL
        SELECT segment, device_id, count(*) FILTER (WHERE day_row), sum(crashes),
               sum(reboots), sum(heartbeats), sum(expected_heartbeats), sum(records_dropped)
        FROM device_health_rows(
            since := CASE WHEN health_from_state(since, until, segment_by, as_of)
                          THEN state_through() ELSE since END,
            until := until, segment_by := segment_by, as_of := as_of)
        GROUP BY ALL
    ) GROUP BY ALL
)
SELECT segment,
       count(*) AS devices,
       count(*) FILTER (WHERE crashes = 0) AS crash_free_devices,
       round(count(*) FILTER (WHERE crashes = 0) / count(*), 4) AS crash_free_share,
       sum(crashes) AS crashes,
       round(sum(reboots) / sum(device_days), 4) AS reboots_per_device_day,
       round(sum(heartbeats) / nullif(sum(expected_heartbeats), 0), 4) AS connectivity,
       sum(records_dropped) AS records_dropped
FROM per_device GROUP BY segment ORDER BY segment;

-- rollout_guard_devices: per device seen on `version` or `previous` from `since`, its
-- arm and its health on that firmware, what `fleetpulse rollout`'s guard compares
-- (docs/ota.md). A device with any record on `version` is `updated` and counts its days
-- on `version` only (a rollback does not move it back); the others are the `control`,
-- counting their days on `previous`. device_days counts UTC days with a record (a
-- partial day is one), crash_days those with a crash. The boot into the new version is a
-- power_on like any other: `reboots` here leaves out one per updated device. Heartbeats
-- count whole days only, not a device's first day on its firmware in the window: that
-- day starts when the device did (or updated), and the heartbeat its interval had not
-- reached by midnight would count as missed, against every updated device.
CREATE OR REPLACE MACRO rollout_guard_devices(version, previous, since := DATE '1970-01-01',
                                              until := DATE '2999-12-31') AS TABLE
WITH health AS (
    SELECT * FROM device_health_days(since := since, until := until, segment_by := 'fw')
    WHERE segment IN (version, previous)
),
arms AS (
    SELECT device_id, CASE WHEN bool_or(segment = version) THEN 'updated'
                           ELSE 'control' END AS arm
    FROM health GROUP BY device_id
),
mine AS (
    SELECT h.*, a.arm, h.day = min(h.day) OVER (PARTITION BY h.device_id) AS first_day
    FROM health h JOIN arms a USING (device_id)
    WHERE h.segment = CASE a.arm WHEN 'updated' THEN version ELSE previous END
)
SELECT device_id, arm, count(*) AS device_days,
       count(*) FILTER (WHERE crashes > 0) AS crash_days, sum(crashes) AS crashes,
       greatest(sum(reboots) - (arm = 'updated')::INTEGER, 0) AS reboots,
       coalesce(sum(heartbeats) FILTER (WHERE NOT first_day), 0) AS heartbeats,
       coalesce(sum(expected_heartbeats) FILTER (WHERE NOT first_day), 0)
           AS expected_heartbeats
FROM mine GROUP BY device_id, arm ORDER BY device_id;

-- metric: rollout_progress: per firmware version an update installed, the devices that started it, booted into it (applied), confirmed it, and went back from it (rolled back, by the device or the server), from the devices' own update events
CREATE OR REPLACE MACRO rollout_progress(since := DATE '1970-01-01',
                                         until := DATE '2999-12-31') AS TABLE
WITH steps AS (
    -- update_rolled_back names the version gone back to; `value` the one it left
    SELECT device_id, event,
           CASE WHEN event = 'update_rolled_back' THEN value ELSE name END AS version
    FROM events
    WHERE event IN ('update_started', 'update_applied', 'update_confirmed',
                    'update_rolled_back')
      AND date BETWEEN since AND until
)
SELECT version,
       count(DISTINCT device_id) FILTER (WHERE event = 'update_started') AS started,
       count(DISTINCT device_id) FILTER (WHERE event = 'update_applied') AS applied,
       count(DISTINCT device_id) FILTER (WHERE event = 'update_confirmed') AS confirmed,
       count(DISTINCT device_id) FILTER (WHERE event = 'update_rolled_back') AS rolled_back
FROM steps GROUP BY version ORDER BY version;

-- rollout_guard: what `fleetpulse rollout`'s guard compares, per arm (the means of the
-- per-device values, docs/ota.md; the guard's confidence sequences are in Python)
CREATE OR REPLACE MACRO rollout_guard(version, previous, since := DATE '1970-01-01',
                                      until := DATE '2999-12-31') AS TABLE
SELECT arm, count(*) AS devices,
       round(avg(1 - crash_days / device_days), 4) AS crash_free_days,
       round(avg(reboots / device_days), 4) AS reboots_per_device_day,
       round(avg(least(1, heartbeats / nullif(expected_heartbeats, 0))), 4) AS connectivity
FROM rollout_guard_devices(version, previous, since := since, until := until)
GROUP BY arm ORDER BY arm;

-- metric: usage_by_environment: usage events per device-hour in each temperature band (2 degC) and humidity band (10 %)
CREATE OR REPLACE MACRO usage_by_environment(since := DATE '1970-01-01',
                                             until := DATE '2999-12-31') AS TABLE
-- device-hours and their usage come banded per day from rollup_environment_bands
SELECT temp_from_c, temp_from_c + 2 AS temp_to_c, humidity_from_pct,
       humidity_from_pct + 10 AS humidity_to_pct, sum(device_hours)::BIGINT AS device_hours,
       sum(usage_events) AS usage_events,
       round(sum(usage_events) / sum(device_hours), 4) AS usage_per_device_hour
FROM rollup_environment_bands WHERE date BETWEEN since AND until
GROUP BY ALL ORDER BY temp_from_c, humidity_from_pct;

-- value_quantiles: exact quantiles of temperature (10th, 50th, 90th) and humidity (50th)
-- from the counts of each value (rollup_reading_values), interpolated as quantile_cont
-- does: the value at rank r is the first whose running count exceeds r. Per model
-- (per_day false: date is NULL) or per UTC day (hw is NULL).
CREATE OR REPLACE MACRO value_quantiles(since, until, per_day) AS TABLE
WITH counts AS (
    SELECT CASE WHEN per_day THEN date END AS date, CASE WHEN NOT per_day THEN hw END AS hw,
           measure, value, sum(n) AS n
    FROM rollup_reading_values WHERE date BETWEEN since AND until GROUP BY ALL
),
ranked AS (
    SELECT *, sum(n) OVER (PARTITION BY date, hw, measure ORDER BY value
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto,
           sum(n) OVER (PARTITION BY date, hw, measure) - 1 AS last_rank
    FROM counts
),
wanted AS (
    SELECT * FROM (VALUES ('temperature_c', 0.1::DOUBLE), ('temperature_c', 0.5::DOUBLE),
                          ('temperature_c', 0.9::DOUBLE), ('humidity_pct', 0.5::DOUBLE)) q(measure, p)
),
quantiles AS (
    SELECT r.date, r.hw, w.measure, w.p,
           interpolate(min(r.value) FILTER (WHERE r.upto > floor(r.last_rank::DOUBLE * w.p)),
                       min(r.value) FILTER (WHERE r.upto > floor(r.last_rank::DOUBLE * w.p) + 1),
                       any_value(r.last_rank::DOUBLE * w.p)) AS q
    FROM ranked r JOIN wanted w USING (measure) GROUP BY ALL
)
SELECT date, hw,
       any_value(q) FILTER (WHERE measure = 'temperature_c' AND p = 0.1) AS p10_temperature_c,
       any_value(q) FILTER (WHERE measure = 'temperature_c' AND p = 0.5) AS median_temperature_c,
       any_value(q) FILTER (WHERE measure = 'temperature_c' AND p = 0.9) AS p90_temperature_c,
       any_value(q) FILTER (WHERE measure = 'humidity_pct') AS median_humidity_pct
FROM quantiles GROUP BY date, hw;

-- metric: readings_by_model: reading distributions (temperature, humidity) per hardware model
CREATE OR REPLACE MACRO readings_by_model(since := DATE '1970-01-01',
                                          until := DATE '2999-12-31') AS TABLE
-- over all the covered days, their per-device counts from the reading_devices state
WITH models AS (
    SELECT hw, count(DISTINCT device_id) AS devices, sum(readings) AS readings FROM (
        SELECT hw, device_id, readings FROM state_reading_devices
        WHERE state_covers(since, until)
        UNION ALL
        SELECT hw, device_id, readings FROM rollup_reading_devices
        WHERE date BETWEEN since AND until
            AND uncovered(date, state_covers(since, until))
    ) GROUP BY hw
)
SELECT m.hw, m.devices, m.readings,
       round(q.p10_temperature_c, 2) AS p10_temperature_c,
       round(q.median_temperature_c, 2) AS median_temperature_c,
       round(q.p90_temperature_c, 2) AS p90_temperature_c,
       round(q.median_humidity_pct, 2) AS median_humidity_pct
FROM models m
LEFT JOIN value_quantiles(since, until, false) q ON q.hw IS NOT DISTINCT FROM m.hw
ORDER BY m.hw;

-- metric: daily_temperature: median and spread of reported temperature per UTC day
CREATE OR REPLACE MACRO daily_temperature(since := DATE '1970-01-01',
                                          until := DATE '2999-12-31') AS TABLE
-- from the per-day rollups (100M readings at full scale took 7.5 s to sort per day)
WITH days AS (
    SELECT date, sum(readings)::BIGINT AS readings FROM rollup_reading_devices
    WHERE date BETWEEN since AND until GROUP BY date
)
SELECT d.date AS day, q.median_temperature_c, q.p10_temperature_c, q.p90_temperature_c,
       q.median_humidity_pct, d.readings
FROM days d LEFT JOIN value_quantiles(since, until, true) q USING (date)
ORDER BY day;

-- experiment_assignment: the variant of every device seen, for experiment `key`: the one
-- it reported applying (experiment_reports), else the hash (experiment_variant above).
CREATE OR REPLACE MACRO experiment_assignment(key, share_b := 0.5) AS TABLE
SELECT d.device_id, experiment_bucket(key, d.device_id) AS bucket,
       coalesce(r.variant, experiment_variant(key, d.device_id, share_b)) AS variant,
       r.variant IS NOT NULL AS reported, r.applied_at
FROM activations d
LEFT JOIN experiment_reports r ON r.experiment = key AND r.device_id = d.device_id;

-- exposure_feature_days: per device in `exposure` (a table or CTE with device_id,
-- exposed_at, exposed_day) and UTC day, its uses of `feature_name` from exposed_at on
-- (`after`, days up to `until`) and in the pre_days x 86,400 s before it (`pre`). Whole
-- days come from the feature_days rollup; raw rows only on the day the pre-period starts,
-- and on the exposure day when the exposure was not that day's first usage event (a
-- device that applied its variant mid-day after using the product): otherwise every use
-- that day is at or after it. Counting every raw use against each device's exposure
-- read all the events twice per analysis.
-- pre_days: experiment_exposure's default, for an analysis that reads these rows itself
CREATE OR REPLACE MACRO exposure_feature_days(exposure, feature_name, until,
                                              pre_days := 14) AS TABLE
WITH e AS (
    SELECT x.device_id, x.exposed_at, x.exposed_day,
           epoch_us(x.exposed_at) - CAST(pre_days AS BIGINT) * 86400000000 AS pre_from,
           coalesce(min(f.first_usage_ts) = x.exposed_at, false) AS whole
    FROM query_table(exposure) x
    LEFT JOIN rollup_firmware_days f ON f.device_id = x.device_id AND f.date = x.exposed_day
    GROUP BY x.device_id, x.exposed_at, x.exposed_day
),
b AS (SELECT *, DATE '1970-01-01' + (pre_from // 86400000000)::INTEGER AS pre_day FROM e),
-- The rollup's days and the raw days are disjoint: each (device, day) comes from one.
-- One row per device and day (first_all) with the day's uses: no GROUP BY over a row
-- per device-day.
rolled AS (
    SELECT r.device_id, r.date AS day,
           CASE WHEN r.date >= b.exposed_day THEN r.day_uses ELSE 0 END AS after,
           CASE WHEN r.date < b.exposed_day THEN r.day_uses ELSE 0 END AS pre
    FROM rollup_feature_days r JOIN b ON r.device_id = b.device_id
    WHERE r.feature = feature_name AND r.first_all AND r.date <= until
        AND (r.date > b.pre_day OR r.date = b.exposed_day)
        AND (r.date <> b.exposed_day OR b.whole)
),
-- two joins, each on the device and a day: the days the devices need then bound the
-- scan: days no device needs are not read
raw AS (
    SELECT u.device_id, u.date AS day, 0 AS after, count(*) AS pre
    FROM usage_events u JOIN b ON u.device_id = b.device_id AND u.date = b.pre_day
    WHERE b.pre_day < b.exposed_day AND epoch_us(u.ts) >= b.pre_from
        AND u.event = 'feature_used' AND u.feature = feature_name
    GROUP BY ALL
    UNION ALL
    SELECT u.device_id, u.date,
           count(*) FILTER (WHERE u.ts >= b.exposed_at AND u.date <= until),
           count(*) FILTER (WHERE u.ts < b.exposed_at AND epoch_us(u.ts) >= b.pre_from)
    FROM usage_events u JOIN b ON u.device_id = b.device_id AND u.date = b.exposed_day
    WHERE NOT b.whole AND u.event = 'feature_used' AND u.feature = feature_name
    GROUP BY ALL
)
SELECT * FROM rolled UNION ALL SELECT * FROM raw;

-- experiment_exposed: per device exposed to experiment `key` in the period, its variant and
-- exposure (experiment_exposure without the uses, for an analysis that counts them once)
CREATE OR REPLACE MACRO experiment_exposed(key, share_b := 0.5, since := DATE '1970-01-01',
                                           until := DATE '2999-12-31') AS TABLE
-- The first usage event after applying: from the rollup's first usage of each day after
-- the day the device applied its variant (every day when it never reported applying),
-- and from raw rows on that day only. Joining every usage event to the assignment and
-- taking the minimum per device made millions of joined rows.
WITH a AS (SELECT * FROM experiment_assignment(key, share_b)),
firsts AS (
    SELECT f.device_id, f.first_usage_ts AS t
    FROM rollup_firmware_days f JOIN a USING (device_id)
    WHERE f.date BETWEEN since AND until AND f.first_usage_ts IS NOT NULL
        AND (a.applied_at IS NULL OR f.date > utc_day(a.applied_at))
    UNION ALL
    SELECT u.device_id, u.ts
    FROM usage_events u JOIN a ON u.device_id = a.device_id
        AND u.date = utc_day(a.applied_at) AND u.ts > a.applied_at
    WHERE u.date BETWEEN since AND until
),
exposed AS (
    SELECT a.device_id, a.variant, min(f.t) AS exposed_at, utc_day(min(f.t)) AS exposed_day
    FROM a JOIN firsts f USING (device_id) GROUP BY ALL
)
SELECT * FROM exposed;

-- exposure_uses: the rows of experiment_exposure from its two parts, the exposure
-- (`exposed`: experiment_exposed's rows) and the uses per device and day
-- (`feature_days`: exposure_feature_days' rows), each a table or CTE name: an analysis
-- that has both adds them up as the metric does
CREATE OR REPLACE MACRO exposure_uses(exposed, feature_days) AS TABLE
SELECT e.device_id, e.variant, e.exposed_at, e.exposed_day,
       coalesce(sum(u.after), 0) AS uses, coalesce(sum(u.after), 0) > 0 AS converted,
       coalesce(sum(u.pre), 0) AS pre_uses
FROM query_table(exposed) e LEFT JOIN query_table(feature_days) u USING (device_id)
GROUP BY e.device_id, e.variant, e.exposed_at, e.exposed_day;

-- daily_uses: a device's uses per UTC day from its exposure on, from exposure_feature_days'
-- rows (a table or CTE name): what the sequential looks add up
CREATE OR REPLACE MACRO daily_uses(feature_days) AS TABLE
SELECT device_id, day, after AS uses FROM query_table(feature_days) WHERE after > 0;

-- metric: experiment_exposure: per device exposed to experiment `key`: its variant (as reported applying, else the hash), exposure = its first usage event in the period after it applied the variant, uses of `feature_name` from then on, and in the pre_days x 86,400 s before it (the CUPED covariate)
CREATE OR REPLACE MACRO experiment_exposure(key, feature_name := 'eco_mode', share_b := 0.5,
                                            since := DATE '1970-01-01',
                                            until := DATE '2999-12-31',
                                            pre_days := 14) AS TABLE
WITH exposed AS (SELECT * FROM experiment_exposed(key, share_b, since, until)),
feature_days AS (
    SELECT * FROM exposure_feature_days('exposed', feature_name, until, pre_days := pre_days)
)
SELECT * FROM exposure_uses('exposed', 'feature_days');

-- exposure_guardrails: over the rows of experiment_exposed (or experiment_exposure)
-- already computed, in the table or CTE named `exposure`.
CREATE OR REPLACE MACRO exposure_guardrails(exposure, since, until) AS TABLE
SELECT e.device_id, e.variant, count(h.day) FILTER (WHERE h.day_row) AS device_days,
       coalesce(sum(h.crashes), 0) AS crashes, coalesce(sum(h.reboots), 0) AS reboots,
       coalesce(sum(h.heartbeats), 0) AS heartbeats,
       coalesce(sum(h.expected_heartbeats), 0) AS expected_heartbeats
FROM query_table(exposure) e
LEFT JOIN device_health_rows(since := since, until := until, segment_by := 'all') h
    ON h.device_id = e.device_id AND h.day >= e.exposed_day
GROUP BY ALL;

-- experiment_daily_uses: per exposed device and UTC day from its exposure, uses of
-- `feature_name`: the running totals a sequential test looks at day by day
CREATE OR REPLACE MACRO experiment_daily_uses(key, feature_name := 'eco_mode', share_b := 0.5,
                                              since := DATE '1970-01-01',
                                              until := DATE '2999-12-31') AS TABLE
-- the exposure alone: experiment_exposure would count the uses a first time
WITH exposure AS (SELECT * FROM experiment_exposed(key, share_b, since, until)),
feature_days AS (
    SELECT * FROM exposure_feature_days('exposure', feature_name, until, pre_days := 0)
)
SELECT * FROM daily_uses('feature_days');

-- experiment_guardrails: per exposed device, its health from its exposure day on
CREATE OR REPLACE MACRO experiment_guardrails(key, feature_name := 'eco_mode', share_b := 0.5,
                                              since := DATE '1970-01-01',
                                              until := DATE '2999-12-31') AS TABLE
-- the exposure alone (the feature does not move it): experiment_exposure would count uses
WITH exposure AS (SELECT * FROM experiment_exposed(key, share_b, since, until))
SELECT * FROM exposure_guardrails('exposure', since, until);
