"""`explain` pinned on a dozen hand-made devices, every number worked out by hand below.

Baseline = Jan 5-6 2026, compare = Jan 7-8. Twelve devices, each reporting every day:
d01-d06 hw=plug, d07-d12 hw=thermo; d01-d04 run fw 1.0 in the baseline and 2.0 in the
compare period, the rest 1.0 throughout.
  activity: every device uses itself on both baseline days; in the compare period d01-d06
    on both days, d07-d12 on Jan 7 only.
  crashes: d07 on Jan 6; d01, d02, d03 on Jan 7; d08 on Jan 8.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_metric_definitions import _dataset, ev, t

from fleetpulse.analytics.explain import explain
from fleetpulse.errors import UserError

BASE = "DATE '2026-01-05', DATE '2026-01-06'"
COMPARE = "DATE '2026-01-07', DATE '2026-01-08'"

HW = {f"d{i:02d}": ("plug" if i <= 6 else "thermo") for i in range(1, 13)}


def _fleet() -> dict[str, list[tuple[str, list[dict]]]]:
    crashes = {"d07": 6, "d01": 7, "d02": 7, "d03": 7, "d08": 8}
    fleet = {}
    for i in range(1, 13):
        dev = f"d{i:02d}"
        envelopes = []
        for day in (5, 6, 7, 8):
            fw = "2.0" if i <= 4 and day >= 7 else "1.0"
            records = [ev(t(day, 8), "heartbeat", uptime_s=1, reconnects=0, free_mem=1)]
            if day <= 7 or i <= 6:
                records.append(ev(t(day, 10), "button_press"))
            if crashes.get(dev) == day:
                records.append(ev(t(day, 12), "power_on", reset_cause="exception"))
            envelopes.append((fw, records))
        fleet[dev] = envelopes
    return fleet


@pytest.fixture(scope="module", params=["raw", "rollups"])
def con(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    return _dataset(tmp_path_factory.mktemp("explain"), _fleet(), hw=HW, layout=request.param)


def _element(con, metric: str, element: list[str]) -> dict:
    rel = con.sql(f"SELECT * FROM explain_elements('{metric}', {BASE}, {COMPARE}, "
                  "dimensions := ['fw', 'hw']) WHERE element = $e", params={"e": element})
    rows = rel.fetchall()
    assert len(rows) == 1, f"{element}: {rows}"
    return dict(zip(rel.columns, rows[0], strict=True))


def test_crash_free_share_explanatory_power_surprise_and_risk_ratio(con) -> None:
    # Crash-free share: baseline 11/12 (d07 crashed), compare 8/12; A - F = -3/12.
    # fw=2.0 (d01-d04): crash-free 4 of 4 before, 1 of 4 after: dn = -3, dd = 0.
    #   EP = (F_d dn - F_n dd) / (F_d (F_d + dd)) / (A - F)
    #      = (12 * -3 - 11 * 0) / (12 * 12) / (-3/12) = -0.25 / -0.25 = 1
    e = _element(con, "crash_free", ["fw=2.0"])
    assert e["devices"] == 4
    assert e["before"] == 1.0 and e["after"] == 0.25
    assert e["ep"] == pytest.approx(1.0)
    # surprise: numerator shares 4/11 -> 1/8, denominator shares 4/12 -> 4/12 (0):
    # 0.5 (4/11 log2(2 (4/11) / (4/11 + 1/8)) + 1/8 log2(2 (1/8) / (4/11 + 1/8)))
    #   = 0.5 (0.208631 - 0.120854) = 0.0438884
    assert e["surprise"] == pytest.approx(0.0438884, abs=1e-6)
    # risk ratio, compare period: 1/4 crash-free against the rest's 7/8 = 0.285714.
    # Variances of the ratios over devices: element sum (n - 0.25)^2 = 3 (0.0625) + 0.5625
    # = 0.75, / 4^2 = 0.046875; rest 7 (0.125^2) + 0.875^2 = 0.875, / 8^2 = 0.013672.
    # se(log RR) = sqrt(0.046875 / 0.25^2 + 0.013672 / 0.875^2) = sqrt(0.767857) = 0.876275
    # 95%: 0.285714 exp(-/+ 1.96 * 0.876275) = [0.051290, 1.591593]
    assert e["risk_ratio"] == pytest.approx(0.285714, abs=1e-6)
    assert e["rr_low"] == pytest.approx(0.051290, abs=1e-6)
    assert e["rr_high"] == pytest.approx(1.591593, abs=1e-6)
    # z: (element - rest) after minus before: (0.25 - 0.875) - (1 - 0.875) = -0.75;
    # se = sqrt(0.046875 + 0.013672 + 0 + 0.013672) = 0.272431; z = -2.753
    assert e["z"] == pytest.approx(-0.75 / math.sqrt(0.074219), abs=1e-3)


def test_an_element_that_did_not_move_explains_nothing(con) -> None:
    # fw=1.0 (d05-d12): crash-free 7 of 8 before and after: dn = dd = 0, EP 0, and its
    # rate moved with the rest's (z 0). Its share of the crash-free devices still went
    # 7/11 -> 7/8, which surprise measures: 0.5 (7/11 log2(2 (7/11) / (7/11 + 7/8))
    # + 7/8 log2(2 (7/8) / (7/11 + 7/8))) = 0.5 (-0.157772 + 0.185066) = 0.0136470; the
    # element is not ranked (EP 0).
    e = _element(con, "crash_free", ["fw=1.0"])
    assert (e["before"], e["after"]) == (0.875, 0.875)
    assert e["ep"] == pytest.approx(0.0)
    assert e["surprise"] == pytest.approx(0.0136470, abs=1e-6)


def test_active_devices_explanatory_power_and_surprise(con) -> None:
    # Mean daily active devices: 12 before; after 6 (plugs, 2 of 2 days) + 6 * 0.5 = 9.
    # hw=thermo: 6 -> 3, EP = (3 - 6) / (9 - 12) = 1; hw=plug: 6 -> 6, EP = 0.
    thermo = _element(con, "active_devices", ["hw=thermo"])
    assert thermo["before"] == 6 and thermo["after"] == 3
    assert thermo["ep"] == pytest.approx(1.0)
    assert _element(con, "active_devices", ["hw=plug"])["ep"] == pytest.approx(0.0)
    # surprise: shares 6/12 -> 3/9: 0.5 (0.5 log2(0.5 * 2 / (5/6)) + 1/3 log2((2/3) / (5/6)))
    #   = 0.5 (0.131517 - 0.107309) = 0.0121039
    assert thermo["surprise"] == pytest.approx(0.0121039, abs=1e-6)
    # a sum has no risk ratio
    assert thermo["risk_ratio"] is None
    # z: excess over the proportional share, 3 - 6 * (9 / 12) = -1.5, over
    # sqrt(6 * (0.5 - 1 * 0.75)^2) = sqrt(0.375): -2.449
    assert thermo["z"] == pytest.approx(-1.5 / math.sqrt(0.375), abs=1e-6)


def test_explain_ranks_the_firmware_and_leaves_out_what_adds_nothing(con) -> None:
    # fw=2.0 and hw=plug both hold the whole drop, and fw=2.0 & hw=plug is the same four
    # devices: fw=2.0 is the narrower explanation (hw=plug is dropped: its refinement
    # by fw leaves out a third of its devices and keeps all of the change), the
    # combination says nothing more than fw=2.0.
    rows = con.sql(f"SELECT element, explanatory_power FROM explain('crash_free', {BASE}, "
                   f"{COMPARE}, dimensions := ['fw', 'hw'], min_z := 1.5, min_devices := 1)"
                   ).fetchall()
    assert rows == [(["fw=2.0"], 1.0)]


def test_a_change_within_chance_is_not_explained(con) -> None:
    # The whole change: crash-free 11/12 -> 8/12, z = -0.25 / sqrt(0.006366 + 0.018519)
    # = -1.585: under the default 3, so nothing is ranked.
    change = con.sql(f"SELECT * FROM explain_change('crash_free', {BASE}, {COMPARE})")
    devices, before, after, z, real = change.fetchall()[0]
    assert (devices, real) == (12, False)
    assert (before, after) == pytest.approx((11 / 12, 8 / 12))
    assert z == pytest.approx(-0.25 / math.sqrt(0.0063657 + 0.0185185), abs=1e-3)
    assert con.sql(f"SELECT count(*) FROM explain('crash_free', {BASE}, {COMPARE})"
                   ).fetchall() == [(0,)]
    from datetime import date

    result = explain(con, "crash_free", (date(2026, 1, 5), date(2026, 1, 6)),
                     (date(2026, 1, 7), date(2026, 1, 8)))
    assert not result.real and result.rows == []
    assert result.summary.startswith("no real change in crash-free share 0.917 -> 0.667")


def test_mistakes_are_one_line(con, tmp_path: Path) -> None:
    from datetime import date

    days = (date(2026, 1, 5), date(2026, 1, 6))
    with pytest.raises(UserError, match="no metric 'dau'"):
        explain(con, "dau", days, days)
    with pytest.raises(UserError, match="no dimension 'region'"):
        explain(con, "crash_free", days, days, dims=["region"])
    with pytest.raises(UserError, match="ends before it begins"):
        explain(con, "crash_free", (days[1], days[0]), days)
