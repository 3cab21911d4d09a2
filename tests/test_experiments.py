"""Experiments v2 against known answers: the simulator plants effects in per-device
usage whose pre-period predicts it (simulators/experiment_sim.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fleetpulse.analytics.experiments import analyze, confidence_sequence, cuped, holm
from fleetpulse.analytics.exposed import Device, day_number
from fleetpulse.simulators.experiment_sim import simulate


def _uses(r: dict, variant: str = "B"):
    return next(c for c in r["comparisons"]
                if c.variant == variant and c.metric == "uses_per_device")


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04: x3 -> 0.03, x2 -> 0.06, x1 -> 0.04 raised to 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_cuped_theta_by_hand() -> None:
    y = np.array([2.0, 4.0, 6.0, 8.0])
    x = np.array([1.0, 2.0, 3.0, 4.0])  # y = 2x: theta 2, nothing left to vary
    adj, theta = cuped(y, x)
    assert theta == pytest.approx(2.0) and np.allclose(adj, y.mean())
    same, zero = cuped(y, np.ones(4))  # a covariate that does not vary changes nothing
    assert zero == 0.0 and np.allclose(same, y)


def test_the_confidence_sequence_is_wider_than_one_look_needs() -> None:
    low, high, p = confidence_sequence(0.1, 0.04, 2000)
    z = stats.norm.ppf(0.975)
    assert low < 0.1 - z * 0.04 and high > 0.1 + z * 0.04
    assert p > 2 * stats.norm.sf(0.1 / 0.04)  # anytime-valid p is the more cautious
    # where the boundary meets the estimate, the p-value is alpha
    lo, _, _ = confidence_sequence(0.2, 0.04, 2000)
    assert confidence_sequence(0.2 - lo, 0.04, 2000)[2] == pytest.approx(0.05, rel=1e-6)


def test_cuped_shrinks_the_interval_and_still_covers_the_planted_effect() -> None:
    devices = simulate(devices=2000, lifts={"B": 0.15}, seed=1)
    with_cuped, without = _uses(analyze(devices)), _uses(analyze(devices, use_cuped=False))
    ratio = with_cuped.variance_ratio
    print(f"CUPED variance ratio {ratio:.3f}")
    assert ratio < 0.6  # the pre-period explains over 40% of the variance
    width = with_cuped.lift_high - with_cuped.lift_low
    assert width < 0.8 * (without.lift_high - without.lift_low)
    assert width == pytest.approx((without.lift_high - without.lift_low) * math.sqrt(ratio),
                                  rel=0.05)
    assert with_cuped.relative_low <= 0.15 <= with_cuped.relative_high


def test_aa_experiments_peeked_at_daily_reject_at_most_5_percent() -> None:
    """200 A/A experiments, each looked at on every one of its 14 days: the sequential
    test may be stopped at any look, and still rejects in at most 5% of them."""
    rejected = sum(
        1 for seed in range(200)
        if any(c.detected_on is not None
               for c in analyze(simulate(devices=500, lifts={"B": 0.0}, seed=seed),
                                min_sample=50)["comparisons"]))
    print(f"A/A rejections with daily looks: {rejected}/200")
    assert rejected <= 10


def test_a_planted_effect_is_detected_and_the_day_reported() -> None:
    devices = simulate(devices=4000, lifts={"B": 0.15}, seed=0)
    c = _uses(analyze(devices))
    assert c.detected_on is not None and c.p_sequential < 0.05
    print(f"detected on {c.detected_on}")
    # by then the devices exposed so far already showed it; a day earlier they did not
    last_day = max(int(d.daily.days.max()) for d in devices if len(d.daily))
    assert day_number(c.detected_on) < last_day
    assert c.cs_low > 0


def test_three_variants_only_the_real_effect_is_significant_after_holm() -> None:
    r = analyze(simulate(devices=3000, lifts={"B": 0.15, "C": 0.0}, seed=2))
    assert set(r["exposed"]) == {"A", "B", "C"} and not r["sample_ratio_mismatch"]
    significant = {(c.variant, c.metric) for c in r["comparisons"] if c.significant}
    assert ("B", "uses_per_device") in significant
    assert not any(v == "C" for v, _ in significant)
    # per metric, Holm multiplies the smaller p-value of B and C by two
    for metric in ("conversion", "uses_per_device"):
        family = [c for c in r["comparisons"] if c.metric == metric]
        smallest = min(family, key=lambda c: c.p_value)
        assert smallest.p_holm == pytest.approx(min(1.0, 2 * smallest.p_value))


def test_a_worse_guardrail_is_flagged() -> None:
    devices = simulate(devices=2000, lifts={"B": 0.0}, seed=5)
    worse = [Device(d.variant, d.uses, d.pre_uses, d.exposed_day, d.daily, d.device_days,
                    d.crashes + (d.variant == "B" and i % 5 == 0), d.reboots, d.heartbeats,
                    d.expected_heartbeats) for i, d in enumerate(devices)]
    r = analyze(worse)
    flagged = {(g.variant, g.metric) for g in r["guardrails"] if g.flagged}
    assert flagged == {("B", "crash_free_share")}
    assert "guardrail worse: B crash_free_share" in r["verdict"]
    assert not any(g.flagged for g in analyze(devices)["guardrails"])


def test_sample_ratio_mismatch_with_three_variants() -> None:
    devices = simulate(devices=3000, lifts={"B": 0.0, "C": 0.0}, seed=4)
    kept = [d for i, d in enumerate(devices) if d.variant != "C" or i % 4]
    r = analyze(kept)
    assert r["sample_ratio_mismatch"] and r["verdict"].startswith("sample ratio mismatch")


def test_the_distribution_functions_are_scipy_stats_own() -> None:
    """experiments.py uses scipy.special (a light import); its p-values and intervals
    are those scipy.stats gives for the same tests."""
    from fleetpulse.analytics.experiments import _chisquare_p, _welch

    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 300), rng.normal(0.2, 1.3, 280)
    diff, se, p, half = _welch(a, b)
    t = stats.ttest_ind(b, a, equal_var=False)
    assert p == pytest.approx(t.pvalue, rel=1e-9)
    assert diff / se == pytest.approx(t.statistic, rel=1e-9)
    low, high = t.confidence_interval(0.95)
    assert (diff - half, diff + half) == pytest.approx((low, high), rel=1e-9)
    assert _chisquare_p([480, 520, 95], [500.0, 500.0, 95.0]) == pytest.approx(
        stats.chisquare([480, 520, 95], [500, 500, 95]).pvalue, rel=1e-9)
