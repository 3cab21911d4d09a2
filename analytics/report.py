"""The dashboard as one self-contained HTML page: a chart per metric group, with the
metric's table under it. Data and the chart code are inline, so the file works
offline and can be mailed; `fleetpulse dashboard` serves the same page, rebuilt from
the dataset on every load.

The charts are drawn by the few lines of JavaScript below rather than a charting
library: a library would have to be inlined into every report (hundreds of KB) or
fetched from the internet, which a report must not need.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from fleetpulse.output import json_value

from .dataset import Result, connect, query

MAX_TABLE_ROWS = 200


@dataclass
class Group:
    key: str
    title: str
    sql: str  # the table shown under the chart
    chart: str  # "line" or "bar"
    x: str  # column for the x axis
    y: list[str]  # one series per column...
    series_by: str | None = None  # ...or one series per value of this column


GROUPS = [
    Group("activity", "Activity: daily, weekly and monthly active devices",
          "SELECT day, dau, wau, mau, stickiness FROM active_devices()", "line", "day",
          ["dau", "wau", "mau"]),
    Group("lifecycle", "Lifecycle: new, returning, resurrecting and dormant devices per week",
          "SELECT * FROM lifecycle()", "bar", "week",
          ["new_devices", "returning_devices", "resurrecting_devices", "dormant_devices"]),
    Group("retention", "Retention: share of each weekly cohort active N weeks later",
          "SELECT * FROM retention()", "line", "weeks_since", ["retention"],
          series_by="cohort_week"),
    Group("features", "Feature adoption: share of active devices that used each feature",
          "SELECT * FROM feature_adoption()", "bar", "feature", ["share_of_active"]),
    Group("funnel", "Funnel: power_on, then session_start, then feature_used within 14 days",
          "SELECT * FROM funnel()", "bar", "name", ["devices"]),
    Group("sessions", "Usage sessions per active device-day",
          "SELECT * FROM sessions()", "line", "day", ["sessions_per_device_day"]),
    Group("firmware", "Firmware rollout: share of active devices on each version",
          "SELECT * FROM firmware_rollout()", "line", "day", ["share"], series_by="fw"),
    Group("health", "Fleet health by firmware: crash-free share of devices",
          "SELECT * FROM fleet_health()", "bar", "segment", ["crash_free_share"]),
    Group("environment", "Usage per device-hour by temperature band (degrees C)",
          "SELECT temp_from_c, sum(device_hours) AS device_hours, sum(usage_events) AS "
          "usage_events, round(sum(usage_events) / sum(device_hours), 4) AS "
          "usage_per_device_hour FROM usage_by_environment() GROUP BY 1 ORDER BY 1",
          "bar", "temp_from_c", ["usage_per_device_hour"]),
    Group("models", "Temperature by hardware model (median)",
          "SELECT * FROM readings_by_model()", "bar", "hw", ["median_temperature_c"]),
]


def _json_value(v: Any) -> Any:
    v = json_value(v)
    return round(v, 6) if isinstance(v, float) else v


def _chart(group: Group, result: Result) -> dict[str, Any]:
    cols = result.columns
    rows = [[_json_value(v) for v in r] for r in result.rows]
    xi = cols.index(group.x)
    if group.series_by:
        si, yi = cols.index(group.series_by), cols.index(group.y[0])
        xs = sorted({r[xi] for r in rows}, key=lambda v: (v is None, v))
        series: dict[str, dict[Any, Any]] = {}
        for r in rows:
            series.setdefault(str(r[si]), {})[r[xi]] = r[yi]
        return {"type": group.chart, "x": xs,
                "series": [{"name": name, "values": [vals.get(x) for x in xs]}
                           for name, vals in series.items()]}
    return {"type": group.chart, "x": [r[xi] for r in rows],
            "series": [{"name": y, "values": [r[cols.index(y)] for r in rows]}
                       for y in group.y]}


# Views most charts derive from. They are materialised once per refresh as TEMP tables,
# which the metric macros then read in place of the views of the same name (DuckDB
# looks in temp first): the dataset is aggregated once instead of once per chart, and
# every chart of a page comes from the same snapshot.
SHARED_VIEWS = ("rollup_firmware_days", "device_days", "activations")


def run_groups(con: duckdb.DuckDBPyConnection,
               timer: Callable[[str, float], None] | None = None) -> list[Result]:
    """Every group's query, in GROUPS order, over one snapshot of the shared views;
    `timer(step, seconds)` is told how long each step took."""
    def timed(step: str, sql: str) -> Result:
        t = time.perf_counter()
        result = query(con, sql)
        if timer is not None:
            timer(step, time.perf_counter() - t)
        return result

    try:
        for name in SHARED_VIEWS:
            timed(f"snapshot {name}", f"CREATE OR REPLACE TEMP TABLE {name} AS FROM main.{name}")
        return [timed(g.key, g.sql) for g in GROUPS]
    finally:
        for name in SHARED_VIEWS:
            con.execute(f"DROP TABLE IF EXISTS temp.{name}")


def experiment_group(con: duckdb.DuckDBPyConnection, key: str, feature: str) -> dict[str, Any]:
    """An experiment's panel: relative lift per variant and metric as bars, and the
    analysis `fleetpulse metrics experiment` prints as its table."""
    from .experiment_query import experiment_devices
    from .experiments import analyze

    r = analyze(experiment_devices(con, key, feature))
    columns = ["variant", "metric", "A", "variant's", "relative lift", "rel. low", "rel. high",
               "p Holm", "CUPED var ratio", "p anytime", "detected on", "verdict"]
    rows: list[list[Any]] = [
        [c.variant, c.metric, c.a, c.b, c.relative_lift, c.relative_low, c.relative_high,
         c.p_holm, c.variance_ratio, c.p_sequential,
         c.detected_on.isoformat() if c.detected_on else None,
         "significant" if c.significant else ""] for c in r["comparisons"]]
    rows += [[g.variant, f"guardrail: {g.metric}", g.a, g.b, None, None, None, g.p_holm,
              None, None, None, "worse" if g.flagged else ""] for g in r["guardrails"]]
    exposed = ", ".join(f"{v} {n}" for v, n in r["exposed"].items())
    return {
        "key": f"experiment-{key}", "sql": f"fleetpulse metrics experiment --key {key} "
        f"--feature {feature}",
        "title": f"Experiment {key} ({feature}; exposed {exposed}): {r['verdict']}",
        "chart": {"type": "bar", "x": [f"{c.variant} {c.metric}" for c in r["comparisons"]],
                  "series": [{"name": "relative lift (CUPED)",
                              "values": [_json_value(c.relative_lift)
                                         for c in r["comparisons"]]}]},
        "columns": columns, "rows": [[_json_value(v) for v in row] for row in rows],
        "total_rows": len(rows)}


def report_data(data: str | Path, experiments: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """Every group's chart and table; then a panel per (key, feature) experiment."""
    con = connect(data)
    groups = []
    for g, result in zip(GROUPS, run_groups(con), strict=True):
        groups.append({
            "key": g.key, "title": g.title, "sql": g.sql, "chart": _chart(g, result),
            "columns": result.columns,
            "rows": [[_json_value(v) for v in r] for r in result.rows[:MAX_TABLE_ROWS]],
            "total_rows": len(result.rows),
        })
    groups += [experiment_group(con, key, feature) for key, feature in experiments]
    con.close()
    return {"generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "dataset": str(data), "groups": groups}


def render(payload: dict[str, Any], refresh_hint: bool = False) -> str:
    blob = inline_json(payload)
    hint = "Reload the page to re-query the dataset." if refresh_hint else ""
    return (_PAGE.replace("__DATA__", blob)
            .replace("__DATASET__", html.escape(str(payload["dataset"])))
            .replace("__GENERATED__", html.escape(payload["generated"]))
            .replace("__HINT__", hint))


def build_report(data: str | Path, experiments: Sequence[tuple[str, str]] = ()) -> str:
    return render(report_data(data, experiments))


# Characters that can end or change an inline <script> element ("</script", "<!--" starts
# the script-data escape state) or that old parsers take as line ends, written as JSON
# escapes: the data reads the same and no device string can break out of the element.
_INLINE_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                                 "\u2028": "\\u2028", "\u2029": "\\u2029"})


def inline_json(payload: object) -> str:
    """JSON safe to place inside <script type="application/json">."""
    return json.dumps(payload, separators=(",", ":")).translate(_INLINE_ESCAPES)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fleetpulse dashboard</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;color:#b8c0d0;font-size:12px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px;padding:16px}
figure.chart{background:#fff;border-radius:8px;margin:0;padding:12px 16px;
  box-shadow:0 1px 3px rgba(0,0,0,.1)}
figure h2{font-size:15px;margin:0 0 8px} svg{width:100%;height:240px;display:block}
.legend{font-size:12px;margin:4px 0 8px} .legend span{margin-right:12px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
details{margin-top:8px} .tbl{max-height:260px;overflow:auto}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{padding:3px 6px;border-bottom:1px solid #eceef2;text-align:right}
th:first-child,td:first-child{text-align:left} th{position:sticky;top:0;background:#fff}
code{font-size:11px;color:#555} .empty{color:#888;padding:40px 0;text-align:center}
</style></head><body>
<header><h1>fleetpulse</h1><p>__DATASET__ &middot; generated __GENERATED__ &middot; __HINT__</p>
</header>
<main id="charts"></main>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const COLORS = ["#3366cc","#dc3912","#ff9900","#109618","#990099","#0099c6","#dd4477",
                "#66aa00","#b82e2e","#316395"];
const NS = "http://www.w3.org/2000/svg";
function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(v) {
  if (typeof v !== "number") return String(v);
  if (Math.abs(v) >= 1000) return v.toLocaleString("en");
  return String(Math.round(v * 1000) / 1000);
}
// Draw one chart; returns how many data marks it drew.
function draw(svg, chart) {
  const W = 560, H = 240, L = 48, R = 8, T = 8, B = 28;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const vals = chart.series.flatMap(s => s.values).filter(v => typeof v === "number");
  if (!chart.x.length || !vals.length) return 0;
  const max = Math.max(0, ...vals), min = Math.min(0, ...vals), span = (max - min) || 1;
  const y = v => T + (H - T - B) * (1 - (v - min) / span);
  const n = chart.x.length, step = (W - L - R) / Math.max(n, 1);
  for (let i = 0; i <= 4; i++) {
    const v = min + span * i / 4, yy = y(v);
    el("line", {x1: L, x2: W - R, y1: yy, y2: yy, stroke: "#eceef2"}, svg);
    el("text", {x: L - 4, y: yy + 4, "text-anchor": "end", "font-size": 10, fill: "#667"},
       svg).textContent = fmt(v);
  }
  const every = Math.ceil(n / 8);
  chart.x.forEach((x, i) => {
    if (i % every) return;
    el("text", {x: L + step * (i + 0.5), y: H - 8, "text-anchor": "middle", "font-size": 10,
                fill: "#667"}, svg).textContent = String(x).slice(0, 12);
  });
  let marks = 0;
  chart.series.forEach((s, si) => {
    const color = COLORS[si % COLORS.length];
    if (chart.type === "bar") {
      const bw = step * 0.8 / chart.series.length;
      s.values.forEach((v, i) => {
        if (typeof v !== "number") return;
        const x = L + step * (i + 0.1) + bw * si, y0 = y(0), y1 = y(v);
        el("rect", {x, y: Math.min(y0, y1), width: Math.max(bw, 1),
                    height: Math.max(Math.abs(y0 - y1), 1), fill: color, "data-mark": 1}, svg);
        marks++;
      });
    } else {
      const pts = s.values.map((v, i) => typeof v === "number"
        ? [L + step * (i + 0.5), y(v)] : null).filter(p => p);
      if (!pts.length) return;
      el("polyline", {points: pts.map(p => p.join(",")).join(" "), fill: "none",
                      stroke: color, "stroke-width": 2}, svg);
      // points too, so that a series of one value (a new cohort) still shows
      pts.forEach(([cx, cy]) => el("circle", {cx, cy, r: n > 40 ? 1.5 : 2.5, fill: color,
                                               "data-mark": 1}, svg));
      marks += pts.length;
    }
  });
  return marks;
}
function table(group) {
  const t = document.createElement("table");
  const head = t.insertRow();
  group.columns.forEach(c => { const th = document.createElement("th"); th.textContent = c;
                               head.appendChild(th); });
  group.rows.forEach(r => { const tr = t.insertRow();
                            r.forEach(v => { tr.insertCell().textContent =
                                             v === null ? "" : fmt(v); }); });
  return t;
}
const payload = JSON.parse(document.getElementById("data").textContent);
const main = document.getElementById("charts");
for (const g of payload.groups) {
  const fig = document.createElement("figure");
  fig.className = "chart"; fig.id = "chart-" + g.key;
  const h = document.createElement("h2"); h.textContent = g.title; fig.appendChild(h);
  const legend = document.createElement("div"); legend.className = "legend";
  g.chart.series.forEach((s, i) => {
    const span = document.createElement("span");
    span.innerHTML = `<i style="background:${COLORS[i % COLORS.length]}"></i>`;
    span.appendChild(document.createTextNode(s.name)); legend.appendChild(span); });
  fig.appendChild(legend);
  const svg = el("svg", {role: "img", "aria-label": g.title}, fig);
  const marks = draw(svg, g.chart);
  fig.dataset.marks = marks;
  if (!marks) { const p = document.createElement("p"); p.className = "empty";
                p.textContent = "no data yet"; fig.appendChild(p); }
  const det = document.createElement("details");
  const sum = document.createElement("summary");
  sum.textContent = `table (${g.total_rows} rows)`; det.appendChild(sum);
  const code = document.createElement("code"); code.textContent = g.sql; det.appendChild(code);
  const box = document.createElement("div"); box.className = "tbl"; box.appendChild(table(g));
  det.appendChild(box); fig.appendChild(det);
  main.appendChild(fig);
}
document.body.dataset.rendered = payload.groups.length;
</script></body></html>
"""
