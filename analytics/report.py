"""The dashboard as one self-contained HTML page: a panel per metric (chart, CSV export,
table) and one per experiment. The charting library and the data are inline, so the
file works offline and can be mailed; `fleetpulse dashboard` serves the same page for
the view in its URL, re-queried on every load."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from fleetpulse.output import json_value

from . import charts
from .dataset import Result, connect
from .panels import PANELS, View, coverage, run_panels, shared_views

MAX_TABLE_ROWS = 200  # rows shown under a chart; the chart and the CSV have them all


def _json_value(v: Any) -> Any:
    v = json_value(v)
    return round(v, 6) if isinstance(v, float) else v


def _rows(result: Result) -> list[list[Any]]:
    return [[_json_value(v) for v in r] for r in result.rows]


def _verdict_of(c: Any) -> str:
    return "significant" if c.significant else "not significant"


def experiment_panel(con: duckdb.DuckDBPyConnection, key: str, feature: str,
                     view: View) -> dict[str, Any]:
    """An experiment's panel: per variant and metric the relative lift over A with its
    interval, and the analysis `fleetpulse metrics experiment` prints."""
    from .experiment_query import experiment_devices
    from .experiments import analyze

    r = analyze(experiment_devices(con, key, feature, since=view.since, until=view.until))
    exposed = r["exposed"]
    columns = ["comparison", "variant", "exposed", "metric", "A", "variant_value",
               "relative_lift", "rel_low", "rel_high", "p_holm", "p_anytime", "detected_on",
               "verdict"]
    rows: list[list[Any]] = [
        [f"{c.variant} {c.metric}", c.variant, exposed.get(c.variant), c.metric, c.a, c.b,
         c.relative_lift, c.relative_low, c.relative_high, c.p_holm, c.p_sequential,
         c.detected_on, _verdict_of(c)] for c in r["comparisons"]]
    rows += [[f"{g.variant} guardrail: {g.metric}", g.variant, exposed.get(g.variant),
              f"guardrail: {g.metric}", g.a, g.b, None, None, None, g.p_holm, None, None,
              "worse" if g.flagged else "not worse"] for g in r["guardrails"]]
    if not rows:  # no comparison (too few devices): still who was exposed
        rows = [[v, v, n, None, None, None, None, None, None, None, None, None, r["verdict"]]
                for v, n in exposed.items()]
    split = ", ".join(f"{v} {n:,}" for v, n in exposed.items())
    return {
        "key": f"experiment-{key}",
        "title": f"Experiment {key}: uses of {feature} per device",
        "subtitle": f"exposed {split} · sample ratio p = {r['srm_p_value']:.3g}"
                    f"{' (MISMATCH)' if r['sample_ratio_mismatch'] else ''} · verdict: "
                    f"{r['verdict']}",
        "sql": f"fleetpulse metrics experiment --key {key} --feature {feature}",
        "chart": charts.spec("experiment", False),
        "columns": columns, "rows": [[_json_value(v) for v in row] for row in rows]}


def _breakdown_note(view: View, follows: bool) -> str:
    if not view.segmented:
        return ""
    return (f"by {view.by}" if follows
            else f"not broken down: this metric has no breakdown by {view.by}")


def report_data(data: str | Path, view: View | None = None,
                experiments: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """Every panel's chart and rows for `view`; then a panel per experiment key found in
    the data (uses of view.feature) and per (key, feature) asked for."""
    view = view or View()
    con = connect(data)
    try:
        with shared_views(con):
            cov = coverage(con)
            results = run_panels(con, view)
            wanted = dict.fromkeys([(k, view.feature) for k in cov.experiments]
                                   + list(experiments))
            experiment_panels = [experiment_panel(con, key, feature, view)
                                 for key, feature in wanted]
        panels = []
        for p, result in zip(PANELS, results, strict=True):
            panels.append({
                "key": p.key, "title": p.title, "sql": p.sql(view),
                "subtitle": _breakdown_note(view, p.follows(view)),
                "chart": charts.spec(p.chart, p.follows(view)),
                "columns": result.columns, "rows": _rows(result)})
        panels += experiment_panels
    finally:
        con.close()
    return {"generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "dataset": str(data), "view": {"since": str(view.since or ""),
                                           "until": str(view.until or ""), "by": view.by,
                                           "feature": view.feature},
            "defaults": {"by": View.by, "feature": View.feature},
            "coverage": cov.as_json(), "max_table_rows": MAX_TABLE_ROWS, "panels": panels}


def render(payload: dict[str, Any], served: bool = False) -> str:
    """The page; `served` pages change their view by loading a new URL, a file's controls
    are fixed at what it was built with."""
    return (page_with_library().replace("__DATA__", inline_json(payload))
            .replace("__SERVED__", "true" if served else "false"))


def build_report(data: str | Path, view: View | None = None,
                 experiments: Sequence[tuple[str, str]] = ()) -> str:
    return render(report_data(data, view, experiments))


# Characters that can end or change an inline <script> element ("</script", "<!--" starts
# the script-data escape state) or that old parsers take as line ends, written as JSON
# escapes: the data reads the same and no device string can break out of the element.
_INLINE_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                                 "\u2028": "\\u2028", "\u2029": "\\u2029"})


def inline_json(payload: object) -> str:
    """JSON safe to place inside <script type="application/json">."""
    return json.dumps(payload, separators=(",", ":")).translate(_INLINE_ESCAPES)


@cache
def page_with_library() -> str:
    """page.html with the chart library inlined: read and checked once per process, not
    on every page load (the library is 900 KB)."""
    js = charts.javascript()
    # library code placed inside <script> must not end the element early
    if "</script" in js.lower() or "<!--" in js:
        raise ValueError("the chart library's code holds '</script' or '<!--': it cannot "
                         "be inlined as it is")
    return resources.files(__package__).joinpath("page.html").read_text().replace(
        "__VEGA__", js)
