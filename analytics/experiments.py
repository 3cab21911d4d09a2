"""A/B/n experiment analysis over per-device rows (experiment_exposure and
experiment_guardrails in analytics/metrics.sql; `fleetpulse metrics experiment`).

Every variant is compared with the control (A) on two metrics:
  conversion       share of exposed devices that used the feature after exposure
  uses_per_device  mean uses of the feature per exposed device after exposure
Each comparison has:
  - CUPED (Deng, Xu, Kohavi, Walker 2013): the metric y is replaced by
    y - theta * (x - mean(x)), x the device's uses of the feature in the 14 days before
    its exposure and theta = Cov(y, x) / Var(x) over the two variants compared. The
    lift is unchanged in expectation; its variance shrinks by the printed ratio.
  - the absolute lift with a 95% Welch interval and a fixed-horizon p-value;
  - the relative lift B/A - 1 with a delta-method interval (a ratio of two means);
  - Holm's step-down correction across the variants compared on each metric;
  - a sequential test: an asymptotic confidence sequence (Waudby-Smith, Arbour,
    Sinha, Kennedy, Ramdas 2024), valid at every look however often a PM peeks,
    tuned to be tightest near `tuning_n` exposed devices; its anytime-valid p-value,
    and, given daily data, the first UTC day it excluded no effect.
Guardrails per variant against A, flagged when the variant is worse at one-sided
p < 0.05, Holm-adjusted across all of them: crash-free share, reboots per device-day
and connectivity (ratio metrics, by the delta method). And the sample-ratio check:
chi-square of the exposed counts against the planned split, a mismatch at p < 0.001.
Below `min_sample` exposed devices in any variant the verdict is "not enough data"
rather than a number that invites a decision.

Written here rather than taken from a library: scipy gives the distributions, and no
maintained Python package computes CUPED, confidence sequences and guardrails over
per-device rows (GrowthBook's gbstats is tied to its own SQL output and service).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

# scipy.special's distribution functions, not scipy.stats: importing scipy.stats builds
# the docstrings of its hundred distributions at every `fleetpulse metrics experiment`
# (scipy.stats itself is the reference in tests/test_experiments.py).
from scipy.special import chdtrc, ndtr, ndtri, stdtr, stdtrit

from .exposed import EPOCH_ORDINAL, Device, day_number

MIN_SAMPLE = 100
ALPHA = 0.05
SRM_ALPHA = 0.001  # the threshold common A/B tools use for sample-ratio mismatch
CONTROL = "A"
TUNING_N = 1000  # exposed devices at which the confidence sequence is tightest
METRICS = ("conversion", "uses_per_device")
SEQUENTIAL_METHOD = ("asymptotic confidence sequence (Waudby-Smith et al. 2024), "
                     "normal mixture tuned for {n} devices, alpha {alpha}")


@dataclass
class Comparison:
    variant: str
    metric: str
    a: float
    b: float
    lift: float
    lift_low: float
    lift_high: float
    relative_lift: float | None
    relative_low: float | None
    relative_high: float | None
    p_value: float
    p_holm: float = 1.0
    variance_ratio: float = 1.0  # CUPED: Var(adjusted) / Var(y)
    theta: float = 0.0
    cs_low: float = 0.0  # confidence sequence at the last look
    cs_high: float = 0.0
    p_sequential: float = 1.0
    detected_on: date | None = None  # first day the sequence excluded 0

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


@dataclass
class Guardrail:
    variant: str
    metric: str
    a: float
    b: float
    p_worse: float  # one-sided: the variant is worse than A
    p_holm: float = 1.0  # Holm-adjusted across every guardrail of every variant

    @property
    def flagged(self) -> bool:
        return self.p_holm < ALPHA


# -- statistics ---------------------------------------------------------------------


def cuped(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """(y adjusted by the covariate x, theta). theta is 0 when x does not vary."""
    vx = float(np.var(x, ddof=1)) if len(x) > 1 else 0.0
    if vx == 0:
        return y.astype(float), 0.0
    theta = float(np.cov(y, x, ddof=1)[0, 1] / vx)
    return y - theta * (x - x.mean()), theta


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _rho(tuning_n: int, alpha: float) -> float:
    # the mixture variance that makes the sequence tightest at tuning_n observations
    la = -2 * math.log(alpha)
    return math.sqrt((la + math.log(la + 1)) / tuning_n)


def confidence_sequence(diff: float, se: float, n: int, alpha: float = ALPHA,
                        tuning_n: int = TUNING_N) -> tuple[float, float, float]:
    """(low, high, anytime-valid p-value) of the difference of two means, from the
    asymptotic normal-mixture confidence sequence with n = both arms' devices and the
    per-device standard deviation sqrt(n) * se."""
    if n < 2 or se <= 0:
        return diff, diff, 1.0 if diff == 0 else 0.0
    rho2 = _rho(tuning_n, alpha) ** 2
    sigma2 = n * se * se
    k = 2 * (n * rho2 + 1) / (n * n * rho2)
    half = math.sqrt(sigma2 * k * math.log(math.sqrt(n * rho2 + 1) / alpha))
    # the alpha at which the boundary meets diff, with rho kept at the planned alpha's
    p = math.sqrt(n * rho2 + 1) * math.exp(-diff * diff / (sigma2 * k))
    return diff - half, diff + half, min(1.0, p)


def _welch(ya: np.ndarray, yb: np.ndarray) -> tuple[float, float, float, float]:
    """(difference, its standard error, fixed-horizon p-value, half-width of 95%)."""
    na, nb = len(ya), len(yb)
    va, vb = float(np.var(ya, ddof=1)) / na, float(np.var(yb, ddof=1)) / nb
    diff = float(yb.mean() - ya.mean())
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, 0.0, 1.0 if diff == 0 else 0.0, 0.0
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))  # Welch-Satterthwaite
    p = float(2 * stdtr(df, -abs(diff) / se))  # two-sided: both tails of Student's t
    return diff, se, p, float(stdtrit(df, 1 - ALPHA / 2)) * se


def _chisquare_p(observed: list[int], expected: list[float]) -> float:
    """Pearson's chi-square goodness of fit: the p-value of the observed counts against
    the expected ones, with len - 1 degrees of freedom."""
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return float(chdtrc(len(observed) - 1, chi2))


def _relative(ya: np.ndarray, yb: np.ndarray) -> tuple[float | None, float | None,
                                                      float | None]:
    """B/A - 1 with its 95% delta-method interval: Var(mB/mA) ~ vB/(nB mA^2) +
    mB^2 vA/(nA mA^4)."""
    ma, mb = float(ya.mean()), float(yb.mean())
    if ma <= 0:
        return None, None, None
    var = (float(np.var(yb, ddof=1)) / len(yb) / ma**2
           + mb**2 * float(np.var(ya, ddof=1)) / len(ya) / ma**4)
    z = float(ndtri(1 - ALPHA / 2))
    r = mb / ma - 1
    return r, r - z * math.sqrt(var), r + z * math.sqrt(var)


def _values(devs: list[Device], metric: str) -> np.ndarray:
    uses = np.array([d.uses for d in devs], dtype=float)
    return (uses > 0).astype(float) if metric == "conversion" else uses


def compare(control: list[Device], treated: list[Device], variant: str, metric: str,
            tuning_n: int = TUNING_N, use_cuped: bool = True) -> Comparison:
    ya, yb = _values(control, metric), _values(treated, metric)
    xa = np.array([d.pre_uses for d in control], dtype=float)
    xb = np.array([d.pre_uses for d in treated], dtype=float)
    raw_var = float(np.var(ya, ddof=1) / len(ya) + np.var(yb, ddof=1) / len(yb))
    theta = 0.0
    if use_cuped:
        adj, theta = cuped(np.concatenate([ya, yb]), np.concatenate([xa, xb]))
        ya_adj, yb_adj = adj[:len(ya)], adj[len(ya):]
    else:
        ya_adj, yb_adj = ya, yb
    diff, se, p, half = _welch(ya_adj, yb_adj)
    rel, rel_low, rel_high = _relative(ya_adj, yb_adj)
    cs_low, cs_high, p_seq = confidence_sequence(diff, se, len(ya) + len(yb),
                                                 tuning_n=tuning_n)
    return Comparison(variant, metric, float(ya.mean()), float(yb.mean()), diff,
                      diff - half, diff + half, rel, rel_low, rel_high, p,
                      variance_ratio=(se * se / raw_var) if raw_var > 0 else 1.0,
                      theta=theta, cs_low=cs_low, cs_high=cs_high, p_sequential=p_seq)


@dataclass
class Looks:
    """What a PM looking every day saw: per exposed device (a row: the control's, then the
    treated) its uses up to and including each day with a use or an exposure (a column),
    the column of its exposure, its arm and its pre-period uses. Built once per variant
    and read by both metrics' first_detection."""
    days: np.ndarray
    upto: np.ndarray
    exposed_col: np.ndarray
    is_b: np.ndarray
    pre_uses: np.ndarray


def looks(control: list[Device], treated: list[Device]) -> Looks | None:
    devs = [d for d in control + treated if d.exposed_day is not None]
    if not devs:
        return None
    # every device's (day, uses) pairs at once: the device's row, the day's column
    rows = np.repeat(np.arange(len(devs)), [len(d.daily) for d in devs])
    use_days = np.concatenate([d.daily.days for d in devs])
    exposed_days = np.array([day_number(d.exposed_day) for d in devs  # type: ignore[arg-type]
                             ], dtype=np.int64)
    days = np.unique(np.concatenate([use_days, exposed_days]))
    per_day = np.zeros((len(devs), len(days)))
    np.add.at(per_day, (rows, np.searchsorted(days, use_days)),
              np.concatenate([d.daily.uses for d in devs]))
    is_b = np.zeros(len(devs), dtype=bool)
    is_b[sum(1 for d in control if d.exposed_day is not None):] = True
    return Looks(days, np.cumsum(per_day, axis=1), np.searchsorted(days, exposed_days), is_b,
                 np.array([d.pre_uses for d in devs], dtype=float))


def first_detection(lk: Looks | None, metric: str, tuning_n: int = TUNING_N,
                    use_cuped: bool = True) -> date | None:
    """The first UTC day on which the confidence sequence, over the devices exposed by
    then and their uses up to then, excluded 0: a PM looking every day would have
    stopped there, and the sequence's guarantee covers every such look."""
    if lk is None:
        return None
    for j, day in enumerate(lk.days):
        seen = lk.exposed_col <= j
        a, b = seen & ~lk.is_b, seen & lk.is_b
        if a.sum() < 2 or b.sum() < 2:
            continue
        y = lk.upto[:, j]
        y = (y > 0).astype(float) if metric == "conversion" else y
        ya, yb = y[a], y[b]
        if use_cuped:
            adj, _ = cuped(np.concatenate([ya, yb]),
                           np.concatenate([lk.pre_uses[a], lk.pre_uses[b]]))
            ya, yb = adj[:len(ya)], adj[len(ya):]
        diff, se, _, _ = _welch(ya, yb)
        low, high, _ = confidence_sequence(diff, se, len(ya) + len(yb), tuning_n=tuning_n)
        if low > 0 or high < 0:
            return date.fromordinal(int(day) + EPOCH_ORDINAL)
    return None


def _ratio(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """sum(num)/sum(den) and its delta-method variance, per-device pairs."""
    n = len(num)
    md = float(den.mean())
    if n < 2 or md == 0:
        return 0.0, 0.0
    r = float(num.sum() / den.sum())
    cov = np.cov(num, den, ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * md * md)
    return r, float(max(var, 0.0))


def guardrails(control: list[Device], treated: list[Device], variant: str) -> list[Guardrail]:
    out = []

    def worse(a: float, b: float, var: float, higher_is_worse: bool) -> float:
        if var <= 0:
            return 1.0 if a == b or (b < a) == higher_is_worse else 0.0
        z = (b - a) / math.sqrt(var)
        return float(ndtr(-z if higher_is_worse else z))  # the normal's upper tail

    ca = np.array([d.crashes == 0 for d in control], dtype=float)
    cb = np.array([d.crashes == 0 for d in treated], dtype=float)
    var = float(np.var(ca, ddof=1) / len(ca) + np.var(cb, ddof=1) / len(cb))
    out.append(Guardrail(variant, "crash_free_share", float(ca.mean()), float(cb.mean()),
                         worse(float(ca.mean()), float(cb.mean()), var, False)))
    for metric, num, den, higher_is_worse in (
            ("reboots_per_device_day", "reboots", "device_days", True),
            ("connectivity", "heartbeats", "expected_heartbeats", False)):
        ra, va = _ratio(np.array([getattr(d, num) for d in control], dtype=float),
                        np.array([getattr(d, den) for d in control], dtype=float))
        rb, vb = _ratio(np.array([getattr(d, num) for d in treated], dtype=float),
                        np.array([getattr(d, den) for d in treated], dtype=float))
        out.append(Guardrail(variant, metric, ra, rb, worse(ra, rb, va + vb, higher_is_worse)))
    return out


# -- the analysis ---------------------------------------------------------------------


def planned_split(variants: list[str], share_b: float) -> dict[str, float]:
    """The planned share of each variant: A/B by share_b, equal shares for more."""
    if sorted(variants) == ["A", "B"] or variants == ["A"]:
        return {"A": 1 - share_b, "B": share_b}
    return {v: 1 / len(variants) for v in variants}


def analyze(devices: list[Device], share_b: float = 0.5, min_sample: int = MIN_SAMPLE,
            tuning_n: int = TUNING_N, use_cuped: bool = True,
            split: dict[str, float] | None = None) -> dict[str, Any]:
    by: dict[str, list[Device]] = {}
    for d in devices:
        by.setdefault(d.variant, []).append(d)
    names = sorted(set(by) | {CONTROL})
    split = split or planned_split(names, share_b)
    names = sorted(set(names) | set(split))
    counts = {v: len(by.get(v, [])) for v in names}
    n = sum(counts.values())
    srm_p = (_chisquare_p([counts[v] for v in names], [n * split.get(v, 0) for v in names])
             if n and all(split.get(v, 0) > 0 for v in names) else 0.0 if n else 1.0)
    result: dict[str, Any] = {
        "exposed": counts, "planned_split": split, "srm_p_value": srm_p,
        "sample_ratio_mismatch": srm_p < SRM_ALPHA, "min_sample": min_sample,
        "cuped": use_cuped, "sequential": SEQUENTIAL_METHOD.format(n=tuning_n, alpha=ALPHA),
        "comparisons": [], "guardrails": []}
    smallest = min(counts.values())
    if smallest < min_sample:
        result["verdict"] = (f"not enough data: {smallest} devices in the smallest "
                             f"variant, at least {min_sample} needed")
        return result
    control = by[CONTROL]
    comps: list[Comparison] = []
    rails: list[Guardrail] = []
    for v in names:
        if v == CONTROL:
            continue
        daily = looks(control, by[v]) if any(d.daily for d in devices) else None
        for metric in METRICS:
            c = compare(control, by[v], v, metric, tuning_n, use_cuped)
            c.detected_on = first_detection(daily, metric, tuning_n, use_cuped)
            comps.append(c)
        rails += guardrails(control, by[v], v)
    for metric in METRICS:  # the variants compared on one metric are one family
        family = [c for c in comps if c.metric == metric]
        for c, p in zip(family, holm([c.p_value for c in family]), strict=True):
            c.p_holm = p
    # The guardrails are one family: three metrics each at 5% would flag one in seven
    # experiments where nothing changed.
    for g, p in zip(rails, holm([g.p_worse for g in rails]), strict=True):
        g.p_holm = p
    result["comparisons"] = comps
    result["guardrails"] = rails
    result["verdict"] = _verdict(result["sample_ratio_mismatch"], comps, rails)
    return result


def _verdict(srm: bool, comps: list[Comparison], rails: list[Guardrail]) -> str:
    if srm:
        return "sample ratio mismatch: the assignment is broken, do not trust the lift"
    significant = [f"{c.variant} {c.metric}" for c in comps if c.significant]
    out = (f"significant (Holm-adjusted): {', '.join(significant)}" if significant
           else "no significant difference")
    flagged = [f"{g.variant} {g.metric}" for g in rails if g.flagged]
    if flagged:
        out += f"; guardrail worse: {', '.join(flagged)}"
    return out
