-- Root cause of a metric's change between two periods: which devices' firmware, model,
-- attributes, experiment arm or conditions moved it (`fleetpulse explain`, docs/explain.md).
--
-- Every device belongs to one element of each dimension, fixed for both periods: its
-- values as of its last day in the compare period (else in the baseline period), so
-- "the devices now on 1.5.0" are compared with themselves before. The metric is a sum
-- (active_devices: mean daily active devices) or a ratio of sums (the rates) over
-- devices; an element is a set of 1 to 3 dimension values.
--
-- For each element e, with F the metric in the baseline period and A in the compare one:
--   explanatory power (Adtributor, Bhagwan et al., NSDI 2014): the share of A - F that
--     e's own change accounts for, the others held as they were: for a sum
--     (A_e - F_e) / (A - F); for a ratio n/d, the change of the whole ratio if only e's
--     numerator and denominator had moved,
--     (F_d * dn_e - F_n * dd_e) / (F_d * (F_d + dd_e)), divided by A - F;
--   surprise: the Jensen-Shannon divergence (bits) of e's share of the metric before and
--     after, p = F_e / F, q = A_e / A: 0.5 (p log2(2p / (p + q)) + q log2(2q / (p + q)));
--     for a ratio the sum of that of its numerator and denominator;
--   risk ratio (MacroBase, Bailis et al., SIGMOD 2017), rates only: e's rate over the
--     rest's in the compare period, with a 95% interval from the devices' spread;
--   z: whether e moved differently from the rest, more than chance: for a sum, e's
--     change beyond its proportional share, sum_i (a_i - f_i A / F) over e's devices,
--     divided by the root of the sum of their squares; for a ratio, the change of e's
--     rate minus the rest's, over its standard error (cluster-robust: a device's
--     records are not independent of each other).
-- A change is explained only when it is real (the whole change |z| >= min_z and at
-- least 1%), by elements with at least min_devices devices, explanatory power >=
-- min_ep and z >= min_z in the change's direction. Of an element and a refinement of it
-- by one more dimension (both passing): when the element's devices outside the
-- refinement did not move more than chance, the element is too broad and is left out
-- (hw=purifier-esp32 on fw 1.5.0, not all of 1.5.0); when they did, or the refinement
-- keeps three quarters of the element's devices, the refinement is a slice of a wider
-- cause and is left out.

-- explain_dimensions: every device's value of each dimension explanations use, as of its
-- last day in the compare period (else the baseline's): fw, hw, age (days since
-- activation at the end of the compare period), temperature and humidity bands (the
-- device's mean reading in both periods), connectivity band (heartbeats received /
-- expected in both periods), each experiment's variant (variant:KEY), each attribute
-- (attr:NAME, its value at the end of the compare period).
CREATE OR REPLACE MACRO explain_dimensions(baseline_from, baseline_to, compare_from,
                                           compare_to) AS TABLE
WITH span AS (
    SELECT least(baseline_from, compare_from) AS lo, greatest(baseline_to, compare_to) AS hi
),
last_day AS (
    SELECT device_id,
           arg_max(fw, (day BETWEEN compare_from AND compare_to, day)) AS fw,
           arg_max(hw, (day BETWEEN compare_from AND compare_to, day)) AS hw
    FROM device_days
    WHERE day BETWEEN baseline_from AND baseline_to OR day BETWEEN compare_from AND compare_to
    GROUP BY device_id
),
climate AS (
    SELECT device_id, avg(temperature_c) AS t, avg(humidity_pct) AS h
    FROM readings
    WHERE date BETWEEN baseline_from AND baseline_to OR date BETWEEN compare_from AND compare_to
    GROUP BY device_id
),
link AS (
    SELECT device_id, sum(heartbeats) / nullif(sum(expected_heartbeats), 0) AS share
    FROM device_health_days(since := (SELECT lo FROM span), until := (SELECT hi FROM span),
                            segment_by := 'all')
    WHERE day BETWEEN baseline_from AND baseline_to OR day BETWEEN compare_from AND compare_to
    GROUP BY device_id
),
wide AS (
    SELECT d.device_id, d.fw, d.hw,
           CASE WHEN compare_to - a.activation_day < 30 THEN 'under 30 days'
                WHEN compare_to - a.activation_day < 90 THEN '30-89 days'
                WHEN compare_to - a.activation_day < 180 THEN '90-179 days'
                ELSE '180 days or more' END AS age,
           CASE WHEN c.t IS NULL THEN NULL ELSE
               printf('%d-%d degC', (floor(c.t / 2) * 2)::INT, (floor(c.t / 2) * 2)::INT + 2)
           END AS temperature,
           CASE WHEN c.h IS NULL THEN NULL ELSE
               printf('%d-%d %%', (floor(c.h / 10) * 10)::INT, (floor(c.h / 10) * 10)::INT + 10)
           END AS humidity,
           CASE WHEN l.share IS NULL THEN NULL
                WHEN l.share < 0.5 THEN 'under 50% of heartbeats'
                WHEN l.share < 0.9 THEN '50-90% of heartbeats'
                WHEN l.share < 0.99 THEN '90-99% of heartbeats'
                ELSE '99% or more of heartbeats' END AS connectivity
    FROM last_day d JOIN activations a USING (device_id)
    LEFT JOIN climate c USING (device_id) LEFT JOIN link l USING (device_id)
)
SELECT device_id, dim, value
FROM (UNPIVOT wide ON fw, hw, age, temperature, humidity, connectivity
      INTO NAME dim VALUE value)
UNION ALL
SELECT device_id, 'variant:' || experiment, arg_max(variant, applied_at)
FROM experiment_reports r SEMI JOIN last_day d USING (device_id)
GROUP BY ALL
UNION ALL
SELECT device_id, 'attr:' || name, arg_max(value, valid_from)
FROM device_attributes a SEMI JOIN last_day d USING (device_id)
WHERE valid_from < (compare_to + 1)::TIMESTAMPTZ
  AND (valid_to IS NULL OR valid_to >= (compare_to + 1)::TIMESTAMPTZ)
GROUP BY ALL;

-- explain_units: per device, the metric's numerator and denominator in the baseline
-- (f_n, f_d) and compare (a_n, a_d) periods. active_devices: active days / days in the
-- period (their sum: mean daily active devices; denominator 1). crash_free: no crash in
-- the period, of devices that reported. reboots: power_ons per device-day reported.
-- connectivity: heartbeats received / expected. uses_per_device: usage events a day per
-- device active in the period. feature_adoption: devices that used feature_name, of
-- devices active in the period. Counts that grow with the period's length are per day,
-- so that periods of different lengths compare (a sum over a longer period would move
-- every element's share of the whole); crash_free and feature_adoption are shares of
-- devices over the whole period: compare periods of one length for them.
CREATE OR REPLACE MACRO explain_units(metric, baseline_from, baseline_to, compare_from,
                                      compare_to, feature_name := 'eco_mode') AS TABLE
WITH periods AS (
    SELECT * FROM (VALUES ('f', baseline_from, baseline_to), ('a', compare_from, compare_to))
        AS t(period, p_from, p_to)
),
activity AS (
    SELECT p.period, d.device_id, (p.p_to - p.p_from + 1) AS days,
           count(*) FILTER (WHERE d.active) AS active_days, sum(d.usage_events) AS uses,
           count(*) AS device_days
    FROM periods p JOIN device_days d ON d.day BETWEEN p.p_from AND p.p_to
    GROUP BY ALL
),
health AS (
    SELECT p.period, h.device_id, sum(h.crashes) AS crashes, sum(h.reboots) AS reboots,
           sum(h.heartbeats) AS heartbeats, sum(h.expected_heartbeats) AS expected
    FROM periods p JOIN device_health_days(since := least(baseline_from, compare_from),
                                           until := greatest(baseline_to, compare_to),
                                           segment_by := 'all') h
        ON h.day BETWEEN p.p_from AND p.p_to
    GROUP BY ALL
),
feature AS (
    SELECT DISTINCT p.period, f.device_id
    FROM periods p JOIN rollup_feature_days f ON f.date BETWEEN p.p_from AND p.p_to
    WHERE f.feature = feature_name
),
per_period AS (
    SELECT a.period, a.device_id,
           CASE metric
               WHEN 'active_devices' THEN a.active_days / a.days
               WHEN 'crash_free' THEN (coalesce(h.crashes, 0) = 0)::INT
               WHEN 'reboots' THEN coalesce(h.reboots, 0) / a.days
               WHEN 'connectivity' THEN coalesce(h.heartbeats, 0) / a.days
               WHEN 'uses_per_device' THEN a.uses / a.days
               WHEN 'feature_adoption' THEN (f.device_id IS NOT NULL AND a.active_days > 0)::INT
               ELSE error('explain: no metric ' || metric || ' (active_devices, crash_free, '
                          || 'reboots, connectivity, uses_per_device, feature_adoption)')
           END::DOUBLE AS n,
           CASE metric
               WHEN 'active_devices' THEN 1
               WHEN 'crash_free' THEN 1
               WHEN 'reboots' THEN a.device_days / a.days
               WHEN 'connectivity' THEN coalesce(h.expected, 0) / a.days
               ELSE (a.active_days > 0)::INT
           END::DOUBLE AS d
    FROM activity a LEFT JOIN health h USING (period, device_id)
    LEFT JOIN feature f USING (period, device_id)
)
SELECT device_id,
       coalesce(sum(n) FILTER (WHERE period = 'f'), 0) AS f_n,
       coalesce(sum(d) FILTER (WHERE period = 'f'), 0) AS f_d,
       coalesce(sum(n) FILTER (WHERE period = 'a'), 0) AS a_n,
       coalesce(sum(d) FILTER (WHERE period = 'a'), 0) AS a_d
FROM per_period GROUP BY device_id;

-- js_divergence: the Jensen-Shannon divergence in bits of a share p before and q after
CREATE OR REPLACE MACRO js_divergence(p, q) AS
    0.5 * (CASE WHEN p > 0 THEN p * log2(2 * p / (p + q)) ELSE 0 END
           + CASE WHEN q > 0 THEN q * log2(2 * q / (p + q)) ELSE 0 END);

-- ratio_variance: the variance of a ratio of sums sum(n) / sum(d) over devices, with
-- each device's records taken together (cluster-robust), from the sums of n^2, n*d, d^2
CREATE OR REPLACE MACRO ratio_variance(sn, sd, snn, snd, sdd) AS
    CASE WHEN sd > 0 THEN greatest(snn - 2 * (sn / sd) * snd + (sn / sd) ^ 2 * sdd, 0) / sd ^ 2
    END;

-- The sums over a set of devices that every statistic below is computed from: the
-- metric's numerator n and denominator d before (f_) and after (a_), their squares and
-- products. A set's complement in another is the difference of their sums.
CREATE OR REPLACE MACRO explain_sums(f_n, f_d, a_n, a_d) AS
    {'devices': count(*), 'f_n': sum(f_n), 'f_d': sum(f_d), 'a_n': sum(a_n), 'a_d': sum(a_d),
     'f_nn': sum(f_n * f_n), 'f_nd': sum(f_n * f_d), 'f_dd': sum(f_d * f_d),
     'a_nn': sum(a_n * a_n), 'a_nd': sum(a_n * a_d), 'a_dd': sum(a_d * a_d),
     'af_nn': sum(a_n * f_n)};
CREATE OR REPLACE MACRO sums_minus(x, y) AS
    {'devices': x.devices - y.devices, 'f_n': x.f_n - y.f_n, 'f_d': x.f_d - y.f_d,
     'a_n': x.a_n - y.a_n, 'a_d': x.a_d - y.a_d, 'f_nn': x.f_nn - y.f_nn,
     'f_nd': x.f_nd - y.f_nd, 'f_dd': x.f_dd - y.f_dd, 'a_nn': x.a_nn - y.a_nn,
     'a_nd': x.a_nd - y.a_nd, 'a_dd': x.a_dd - y.a_dd, 'af_nn': x.af_nn - y.af_nn};

-- the metric over a set's sums, before (after := false) or after: a sum, or a ratio
CREATE OR REPLACE MACRO explain_value(is_sum, x, after) AS
    CASE WHEN after THEN (CASE WHEN is_sum THEN x.a_n ELSE x.a_n / nullif(x.a_d, 0) END)
         ELSE (CASE WHEN is_sum THEN x.f_n ELSE x.f_n / nullif(x.f_d, 0) END) END;

-- explain_z: whether devices e moved differently from the rest of the fleet w (see the
-- top of this file)
CREATE OR REPLACE MACRO explain_z(is_sum, e, w) AS
    CASE WHEN is_sum THEN
        -- e's change beyond its proportional share, over its spread
        (e.a_n - e.f_n * w.a_n / nullif(w.f_n, 0))
        / nullif(sqrt(greatest(e.a_nn - 2 * (w.a_n / nullif(w.f_n, 0)) * e.af_nn
                               + (w.a_n / nullif(w.f_n, 0)) ^ 2 * e.f_nn, 0)), 0)
    -- a ratio: the change of e's rate minus the rest's; e without a baseline (every
    -- device new) is compared with the rest in the compare period alone
    WHEN e.f_d = 0 OR w.f_d - e.f_d = 0 THEN
        (e.a_n / nullif(e.a_d, 0) - (w.a_n - e.a_n) / nullif(w.a_d - e.a_d, 0))
        / nullif(sqrt(ratio_variance(e.a_n, e.a_d, e.a_nn, e.a_nd, e.a_dd)
                      + ratio_variance(w.a_n - e.a_n, w.a_d - e.a_d, w.a_nn - e.a_nn,
                                       w.a_nd - e.a_nd, w.a_dd - e.a_dd)), 0)
    ELSE
        ((e.a_n / nullif(e.a_d, 0) - (w.a_n - e.a_n) / nullif(w.a_d - e.a_d, 0))
         - (e.f_n / e.f_d - (w.f_n - e.f_n) / (w.f_d - e.f_d)))
        / nullif(sqrt(ratio_variance(e.a_n, e.a_d, e.a_nn, e.a_nd, e.a_dd)
                      + ratio_variance(w.a_n - e.a_n, w.a_d - e.a_d, w.a_nn - e.a_nn,
                                       w.a_nd - e.a_nd, w.a_dd - e.a_dd)
                      + ratio_variance(e.f_n, e.f_d, e.f_nn, e.f_nd, e.f_dd)
                      + ratio_variance(w.f_n - e.f_n, w.f_d - e.f_d, w.f_nn - e.f_nn,
                                       w.f_nd - e.f_nd, w.f_dd - e.f_dd)), 0)
    END;

-- the whole change: its z (for a sum, from the devices' paired changes, var_change their
-- variance; for a ratio, the two periods' rates with cluster-robust variances), and
-- whether it is real: |z| >= min_z and at least 1% of the baseline
CREATE OR REPLACE MACRO explain_change_z(is_sum, w, var_change) AS
    CASE WHEN is_sum THEN (w.a_n - w.f_n) / nullif(sqrt(w.devices * var_change), 0)
         ELSE (w.a_n / nullif(w.a_d, 0) - w.f_n / nullif(w.f_d, 0))
              / nullif(sqrt(ratio_variance(w.a_n, w.a_d, w.a_nn, w.a_nd, w.a_dd)
                            + ratio_variance(w.f_n, w.f_d, w.f_nn, w.f_nd, w.f_dd)), 0) END;
CREATE OR REPLACE MACRO explain_is_real(z, before, after, min_z) AS
    coalesce(abs(z) >= min_z AND abs(after - before) >= 0.01 * abs(before), false);

-- explain_change: the metric before and after for the whole fleet, z of the change, and
-- whether it is real.
CREATE OR REPLACE MACRO explain_change(metric, baseline_from, baseline_to, compare_from,
                                       compare_to, feature_name := 'eco_mode',
                                       min_z := 3.0) AS TABLE
WITH fleet AS (
    SELECT explain_sums(f_n, f_d, a_n, a_d) AS w, var_samp(a_n - f_n) AS var_change,
           metric = 'active_devices' AS is_sum
    FROM explain_units(metric, baseline_from, baseline_to, compare_from, compare_to,
                       feature_name := feature_name)
)
SELECT w.devices AS devices, explain_value(is_sum, w, false) AS before,
       explain_value(is_sum, w, true) AS after, explain_change_z(is_sum, w, var_change) AS z,
       explain_is_real(z, before, after, min_z) AS real
FROM fleet;

-- explain_elements: every element (1 to max_dims dimension values) with its statistics,
-- and what explain makes of it: candidate (passes the thresholds), rank (kept after the
-- narrowest-cause rule) and reported. The fleet's units and dimensions are computed once
-- for all of it.
CREATE OR REPLACE MACRO explain_elements(metric, baseline_from, baseline_to, compare_from,
                                         compare_to, feature_name := 'eco_mode',
                                         max_dims := 3, dimensions := NULL, min_ep := 0.1,
                                         min_z := 3.0, min_devices := 0) AS TABLE
WITH units AS MATERIALIZED (
    SELECT * FROM explain_units(metric, baseline_from, baseline_to, compare_from, compare_to,
                                feature_name := feature_name)
),
dims AS MATERIALIZED (
    SELECT d.*, d.dim || '=' || d.value AS label
    FROM explain_dimensions(baseline_from, baseline_to, compare_from, compare_to) d
    SEMI JOIN units USING (device_id)
    WHERE d.value IS NOT NULL
      -- only these dimensions; 'attr' and 'variant' stand for every one of their kind
      AND (dimensions IS NULL OR list_contains(dimensions, d.dim)
           OR list_contains(dimensions, split_part(d.dim, ':', 1)))
      -- the connectivity band is the metric itself: it would explain it by definition
      AND NOT (metric = 'connectivity' AND d.dim = 'connectivity')
),
members AS MATERIALIZED (
    SELECT device_id, [label] AS element FROM dims
    UNION ALL
    SELECT device_id, [x.label, y.label]
    FROM dims x JOIN dims y USING (device_id)
    WHERE x.dim < y.dim AND max_dims >= 2
    UNION ALL
    SELECT device_id, [x.label, y.label, z.label]
    FROM dims x JOIN dims y USING (device_id) JOIN dims z USING (device_id)
    WHERE x.dim < y.dim AND y.dim < z.dim AND max_dims >= 3
),
sums AS (
    SELECT element, explain_sums(f_n, f_d, a_n, a_d) AS s
    FROM members JOIN units USING (device_id) GROUP BY element
),
whole AS (
    SELECT *, explain_value(is_sum, w, false) AS fleet_before,
           explain_value(is_sum, w, true) AS fleet_after,
           explain_is_real(explain_change_z(is_sum, w, var_change), fleet_before, fleet_after,
                           min_z) AS is_real,
           sign(fleet_after - fleet_before) AS direction,
           -- minimum support: PostHog's min(25, 2% of the fleet), or as asked
           CASE WHEN min_devices > 0 THEN min_devices
                ELSE least(25, ceil(0.02 * w.devices)) END AS support
    FROM (SELECT explain_sums(f_n, f_d, a_n, a_d) AS w, var_samp(a_n - f_n) AS var_change,
                 metric = 'active_devices' AS is_sum FROM units)
),
stats AS MATERIALIZED (
    SELECT element, len(element) AS dims, s.devices AS devices, w.devices AS fleet_devices,
           fleet_before, fleet_after,
           explain_value(is_sum, s, false) AS before, explain_value(is_sum, s, true) AS after,
           -- explanatory power: e's own change, the rest held as it was, over the whole
           CASE WHEN fleet_after = fleet_before THEN NULL
                WHEN is_sum THEN (s.a_n - s.f_n) / (fleet_after - fleet_before)
                ELSE (w.f_d * (s.a_n - s.f_n) - w.f_n * (s.a_d - s.f_d))
                     / (w.f_d * (w.f_d + s.a_d - s.f_d)) / (fleet_after - fleet_before)
           END AS ep,
           js_divergence(s.f_n / nullif(w.f_n, 0), s.a_n / nullif(w.a_n, 0))
           + CASE WHEN is_sum THEN 0
                  ELSE js_divergence(s.f_d / nullif(w.f_d, 0), s.a_d / nullif(w.a_d, 0)) END
               AS surprise,
           -- risk ratio, rates only: e's rate over the rest's after, with its 95% interval
           CASE WHEN NOT is_sum AND w.a_n - s.a_n > 0 AND after > 0
                THEN after / ((w.a_n - s.a_n) / (w.a_d - s.a_d)) END AS risk_ratio,
           CASE WHEN NOT is_sum AND w.a_n - s.a_n > 0 AND after > 0
                THEN sqrt(ratio_variance(s.a_n, s.a_d, s.a_nn, s.a_nd, s.a_dd) / after ^ 2
                          + ratio_variance(w.a_n - s.a_n, w.a_d - s.a_d, w.a_nn - s.a_nn,
                                           w.a_nd - s.a_nd, w.a_dd - s.a_dd)
                            / ((w.a_n - s.a_n) / (w.a_d - s.a_d)) ^ 2) END AS log_rr_se,
           risk_ratio * exp(-1.96 * log_rr_se) AS rr_low,
           risk_ratio * exp(1.96 * log_rr_se) AS rr_high,
           explain_z(is_sum, s, w) AS z,
           is_real AND ep >= min_ep AND z * direction >= min_z
               AND s.devices < w.devices  -- a value every device has explains nothing
               AND s.devices >= support AS candidate,
           s, w, is_sum, direction
    FROM sums, whole
),
candidates AS (SELECT * FROM stats WHERE candidate),
refined AS (
    -- each candidate with each candidate refinement of it by one more dimension, and
    -- whether the refinement's complement in it (its devices outside the refinement)
    -- moves the metric more than chance in the change's direction
    SELECT c.element AS broad, n.element AS narrow,
           n.devices >= 0.75 * c.devices AS same_devices,
           explain_z(c.is_sum, sums_minus(c.s, n.s), c.w) * c.direction >= min_z AS beyond
    FROM candidates c JOIN candidates n
        ON n.dims = c.dims + 1 AND list_has_all(n.element, c.element)
),
ranked AS (
    -- too broad: a refinement holds what moved, the rest of its devices did not move
    -- more than chance; a slice: the cause reaches beyond the refinement, or it keeps
    -- three quarters of the devices, and says nothing more. Ranked by explanatory power
    -- (rounded: sums added in another order must not reorder a tie).
    SELECT element,
           row_number() OVER (ORDER BY round(ep, 9) DESC, round(surprise, 9) DESC, dims,
                                       element) AS rank
    FROM candidates c
    WHERE NOT EXISTS (SELECT 1 FROM refined f
                      WHERE f.broad = c.element AND NOT f.same_devices AND NOT f.beyond)
      AND NOT EXISTS (SELECT 1 FROM refined f
                      WHERE f.narrow = c.element AND (f.same_devices OR f.beyond))
),
own AS (
    -- each ranked element's devices that no better-ranked element holds
    SELECT rank, explain_sums(f_n, f_d, a_n, a_d) AS s
    FROM (SELECT m.device_id, r.rank, min(r.rank) OVER (PARTITION BY m.device_id) AS first
          FROM members m JOIN ranked r USING (element))
    JOIN units USING (device_id)
    WHERE rank = first
    GROUP BY rank
)
-- an element below the first is reported only if its devices outside the better-ranked
-- elements moved more than chance too: one that overlaps the cause borrows its
-- significance from it
SELECT st.* EXCLUDE (s, w, is_sum, direction, log_rr_se), r.rank,
       r.rank = 1 OR coalesce(explain_z(st.is_sum, o.s, st.w) * st.direction >= min_z, false)
           AS reported
FROM stats st LEFT JOIN ranked r USING (element) LEFT JOIN own o USING (rank);

-- explain: why METRIC changed from the baseline period to the compare period: the
-- elements (1-3 of fw, hw, age, temperature, humidity, connectivity, variant:KEY,
-- attr:NAME) that account for it, ranked by explanatory power, with surprise, risk
-- ratio (rates) and z; none when the change is not real (explain_change says).
CREATE OR REPLACE MACRO explain(metric, baseline_from, baseline_to, compare_from, compare_to,
                                feature_name := 'eco_mode', max_dims := 3, dimensions := NULL,
                                min_ep := 0.1, min_z := 3.0, min_devices := 0) AS TABLE
SELECT element, dims, devices,
       round(ep, 4) AS explanatory_power, round(surprise, 4) AS surprise,
       round(before, 4) AS before, round(after, 4) AS after,
       round(risk_ratio, 4) AS risk_ratio, round(rr_low, 4) AS rr_low,
       round(rr_high, 4) AS rr_high, round(z, 2) AS z
FROM explain_elements(metric, baseline_from, baseline_to, compare_from, compare_to,
                      feature_name := feature_name, max_dims := max_dims,
                      dimensions := dimensions, min_ep := min_ep, min_z := min_z,
                      min_devices := min_devices)
WHERE reported
ORDER BY rank
;

-- What BI tools show for them (the metrics' comments come from their "-- metric:" lines).
COMMENT ON MACRO TABLE explain IS 'why METRIC changed from the baseline period to the compare period: the groups of devices (1-3 of fw, hw, age, temperature, humidity, connectivity, variant:KEY, attr:NAME) that account for it, ranked by explanatory power, with surprise, risk ratio and z, none when the change is not real (docs/explain.md)';
COMMENT ON MACRO TABLE explain_change IS 'the metric before and after for the whole fleet, z of the change, and whether explain calls it real';
COMMENT ON MACRO TABLE explain_elements IS 'every group of devices explain considered, with its statistics and whether it was a candidate, ranked and reported'
