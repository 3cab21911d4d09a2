"""A/B experiment analysis over `experiment_exposure` (see analytics/metrics.sql).

Two metrics per experiment and feature:
  conversion      share of exposed devices that used the feature at least once:
                  absolute lift with a 95% Wald interval, two-proportion z-test
  uses per device mean uses of the feature per exposed device: Welch's t-test and
                  its 95% interval
plus a sample-ratio-mismatch check (chi-square of the A/B counts against the planned
split). Below `min_sample` exposed devices in either variant the verdict is "not
enough data" rather than a number that invites a decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import stats

MIN_SAMPLE = 100
ALPHA = 0.05
SRM_ALPHA = 0.001  # the threshold common A/B tools use for sample-ratio mismatch


@dataclass
class Arm:
    n: int
    converted: int
    mean: float
    var: float


@dataclass
class Comparison:
    metric: str
    a: float
    b: float
    lift: float
    lift_low: float
    lift_high: float
    relative_lift: float | None
    p_value: float


def _arm(uses: list[int], converted: list[bool]) -> Arm:
    n = len(uses)
    mean = sum(uses) / n if n else 0.0
    var = sum((u - mean) ** 2 for u in uses) / (n - 1) if n > 1 else 0.0
    return Arm(n, sum(converted), mean, var)


def conversion(a: Arm, b: Arm) -> Comparison:
    pa, pb = a.converted / a.n, b.converted / b.n
    diff = pb - pa
    se = math.sqrt(pa * (1 - pa) / a.n + pb * (1 - pb) / b.n)
    pooled = (a.converted + b.converted) / (a.n + b.n)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / a.n + 1 / b.n))
    p = 2 * stats.norm.sf(abs(diff) / se0) if se0 > 0 else 1.0
    z = stats.norm.ppf(1 - ALPHA / 2)
    return Comparison("conversion", pa, pb, diff, diff - z * se, diff + z * se,
                      diff / pa if pa else None, float(p))


def mean_uses(a: Arm, b: Arm) -> Comparison:
    diff = b.mean - a.mean
    va, vb = a.var / a.n, b.var / b.n
    se = math.sqrt(va + vb)
    if se == 0:
        return Comparison("uses_per_device", a.mean, b.mean, diff, diff, diff,
                          diff / a.mean if a.mean else None, 1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))  # Welch-Satterthwaite
    p = 2 * stats.t.sf(abs(diff) / se, df)
    t = stats.t.ppf(1 - ALPHA / 2, df)
    return Comparison("uses_per_device", a.mean, b.mean, diff, diff - t * se, diff + t * se,
                      diff / a.mean if a.mean else None, float(p))


def analyze(rows: list[tuple[str, int, bool]], share_b: float = 0.5,
            min_sample: int = MIN_SAMPLE) -> dict[str, Any]:
    """rows: (variant, uses, converted) per exposed device."""
    by = {"A": ([], []), "B": ([], [])}  # type: dict[str, tuple[list[int], list[bool]]]
    for variant, uses, converted in rows:
        by[variant][0].append(uses)
        by[variant][1].append(converted)
    a, b = _arm(*by["A"]), _arm(*by["B"])
    n = a.n + b.n
    expected = [n * (1 - share_b), n * share_b]
    srm_p = float(stats.chisquare([a.n, b.n], expected).pvalue) if n else 1.0
    result: dict[str, Any] = {"exposed": {"A": a.n, "B": b.n}, "srm_p_value": srm_p,
                              "sample_ratio_mismatch": srm_p < SRM_ALPHA,
                              "min_sample": min_sample, "comparisons": []}
    if min(a.n, b.n) < min_sample:
        result["verdict"] = (f"not enough data: {min(a.n, b.n)} devices in the smaller "
                             f"variant, at least {min_sample} needed")
        return result
    comps = [conversion(a, b), mean_uses(a, b)]
    result["comparisons"] = comps
    significant = [c.metric for c in comps if c.p_value < ALPHA]
    result["verdict"] = ("sample ratio mismatch: the assignment is broken, do not trust the "
                         "lift" if result["sample_ratio_mismatch"] else
                         f"significant: {', '.join(significant)}" if significant else
                         "no significant difference")
    return result
