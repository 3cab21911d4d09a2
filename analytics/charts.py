"""The dashboard's charts as Vega-Lite specs, written with Altair.

Vega-Lite (drawn in the page by vega-embed) does what a PM expects of a chart and what a
hand-written renderer did badly: nice ticks, percent axes, UTC dates, legends, tooltips.
Altair checks each spec against the Vega-Lite schema when it is built, so a typo in an
encoding fails here, in a test, not as an empty chart in someone's browser. The specs
carry no data: the page puts each panel's rows in at draw time, so one spec serves every
date range.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import altair as alt

TABLE = alt.Data(name="table")
HEIGHT = 220
PCT = ".1%"  # tooltips and tables: a share as a percentage, one decimal
PCT_AXIS = ".0%"


def _day(field: str, title: str | None = None) -> alt.X:
    # the dataset's days are UTC days: shown as such in every time zone
    return alt.X(f"{field}:T", timeUnit="utcyearmonthdate", title=title or field,
                 axis=alt.Axis(format="%b %d", labelOverlap=True))


def _day_tip(field: str, title: str | None = None) -> alt.Tooltip:
    return alt.Tooltip(f"{field}:T", timeUnit="utcyearmonthdate", title=title or field,
                       format="%Y-%m-%d")


def _spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    return chart.properties(width="container", height=HEIGHT).to_dict()


def _by_segment(segmented: bool, tips: list[Any]) -> tuple[dict[str, Any], list[Any]]:
    """A colour per segment and the segment in the tooltip, when broken down."""
    if not segmented:
        return {}, tips
    return {"color": alt.Color("segment:N", title="segment")}, [*tips[:1], "segment:N",
                                                                 *tips[1:]]


def activity(segmented: bool) -> dict[str, Any]:
    if segmented:
        color, tips = _by_segment(True, [_day_tip("day"), "dau:Q", "wau:Q", "mau:Q"])
        return _spec(alt.Chart(TABLE).mark_line(point=True).encode(
            x=_day("day"), y=alt.Y("dau:Q", title="daily active devices"),
            tooltip=tips, **color))
    # DAU, WAU and MAU folded into one series column; each point's tooltip names all three,
    # so a WAU equal to MAU (every device active weekly) is visible though drawn under it
    return _spec(alt.Chart(TABLE).transform_fold(
        ["dau", "wau", "mau"], as_=["measure", "devices"]).mark_line(point=True).encode(
        x=_day("day"), y=alt.Y("devices:Q", title="active devices"),
        color=alt.Color("measure:N", sort=["dau", "wau", "mau"], title=None),
        strokeDash=alt.StrokeDash("measure:N", sort=["dau", "wau", "mau"], legend=None),
        tooltip=[_day_tip("day"), "dau:Q", "wau:Q", "mau:Q",
                 alt.Tooltip("stickiness:Q", format=PCT, title="stickiness (DAU/MAU)")]))


LIFECYCLE = ["new_devices", "returning_devices", "resurrecting_devices", "dormant_devices"]


def lifecycle(segmented: bool) -> dict[str, Any]:
    # dormant devices drawn below zero, as analytics tools show a lifecycle
    return _spec(alt.Chart(TABLE).transform_fold(
        [*LIFECYCLE], as_=["status", "devices"]).transform_calculate(
        shown="datum.status === 'dormant_devices' ? -datum.devices : datum.devices").mark_bar(
    ).encode(
        x=alt.X("week:O", timeUnit="utcyearmonthdate", title="week starting",
                axis=alt.Axis(format="%b %d")),
        y=alt.Y("shown:Q", title="devices (dormant below 0)"),
        color=alt.Color("status:N", scale=alt.Scale(
            domain=LIFECYCLE, range=["#2ca02c", "#1f77b4", "#ff7f0e", "#d62728"]), title=None),
        tooltip=[_day_tip("week", "week starting"), "status:N", "devices:Q"]))


def retention(segmented: bool) -> dict[str, Any]:
    base = alt.Chart(TABLE).encode(
        x=alt.X("weeks_since:O", title="weeks since activation", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("cohort_week:O", timeUnit="utcyearmonthdate", title="cohort (week activated)",
                axis=alt.Axis(format="%Y-%m-%d")),
        tooltip=[_day_tip("cohort_week", "cohort"), "cohort_size:Q", "weeks_since:O",
                 "active_in_week:Q", alt.Tooltip("retention:Q", format=PCT)])
    cells = base.mark_rect().encode(color=alt.Color(
        "retention:Q", scale=alt.Scale(domain=[0, 1], scheme="blues"),
        legend=alt.Legend(format=PCT_AXIS)))
    labels = base.mark_text(fontSize=10).encode(
        text=alt.Text("retention:Q", format=PCT_AXIS),
        color=alt.condition("datum.retention > 0.6", alt.value("white"), alt.value("#1d2330")))
    return _spec(alt.layer(cells, labels, data=TABLE))


def features(segmented: bool) -> dict[str, Any]:
    color, tips = _by_segment(segmented, [
        "feature:N", "devices:Q", alt.Tooltip("share_of_active:Q", format=PCT),
        "median_days_to_first_use:Q", "uses_per_device:Q"])
    extra = {"yOffset": "segment:N", **color} if segmented else {}
    return _spec(alt.Chart(TABLE).mark_bar().encode(
        y=alt.Y("feature:N", sort="-x", title=None),
        x=alt.X("share_of_active:Q", title="share of active devices that used it",
                axis=alt.Axis(format=PCT_AXIS)),
        tooltip=tips, **extra))


def funnel(segmented: bool) -> dict[str, Any]:
    base = alt.Chart(TABLE).transform_joinaggregate(
        first="max(devices)").transform_calculate(
        of_first="datum.first ? datum.devices / datum.first : 0").encode(
        y=alt.Y("name:N", sort=alt.EncodingSortField("step"), title=None),
        x=alt.X("devices:Q", title="devices"),
        tooltip=["step:O", "name:N", "devices:Q",
                 alt.Tooltip("of_first:Q", format=PCT, title="of step 1"),
                 alt.Tooltip("median_minutes_from_previous:Q", format=",.0f",
                             title="median minutes from previous")])
    bars = base.mark_bar()
    labels = base.mark_text(align="left", dx=4).encode(text=alt.Text("of_first:Q",
                                                                     format=PCT_AXIS))
    return _spec(alt.layer(bars, labels, data=TABLE))


def sessions(segmented: bool) -> dict[str, Any]:
    color, tips = _by_segment(segmented, [
        _day_tip("day"), "devices:Q", "sessions:Q", "sessions_per_device_day:Q",
        "median_minutes:Q"])
    return _spec(alt.Chart(TABLE).mark_line(point=True).encode(
        x=_day("day"), y=alt.Y("sessions_per_device_day:Q", title="sessions per device-day"),
        tooltip=tips, **color))


def firmware(segmented: bool) -> dict[str, Any]:
    return _spec(alt.Chart(TABLE).mark_area().encode(
        x=_day("day"), y=alt.Y("share:Q", stack="normalize", title="share of active devices",
                               axis=alt.Axis(format=PCT_AXIS)),
        color=alt.Color("fw:N", title="firmware"),
        tooltip=[_day_tip("day"), "fw:N", "devices:Q", alt.Tooltip("share:Q", format=PCT)]))


def health_weekly(segmented: bool) -> dict[str, Any]:
    return _spec(alt.Chart(TABLE).mark_line(point=True).encode(
        x=alt.X("week:T", timeUnit="utcyearmonthdate", title="week starting",
                axis=alt.Axis(format="%b %d")),
        y=alt.Y("crash_free_share:Q", title="crash-free devices",
                axis=alt.Axis(format=PCT_AXIS), scale=alt.Scale(zero=False)),
        color=alt.Color("fw:N", title="firmware"),
        tooltip=[_day_tip("week", "week starting"), "fw:N", "devices:Q", "crash_free_devices:Q",
                 alt.Tooltip("crash_free_share:Q", format=PCT)]))


def health(segmented: bool) -> dict[str, Any]:
    return _spec(alt.Chart(TABLE).mark_bar().encode(
        y=alt.Y("segment:N", title=None),
        x=alt.X("crash_free_share:Q", title="crash-free share of devices",
                axis=alt.Axis(format=PCT_AXIS), scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("segment:N", legend=None),
        tooltip=["segment:N", "devices:Q", "crash_free_devices:Q",
                 alt.Tooltip("crash_free_share:Q", format=PCT), "crashes:Q",
                 alt.Tooltip("reboots_per_device_day:Q", format=".3f"),
                 alt.Tooltip("connectivity:Q", format=PCT)]))


def updates(segmented: bool) -> dict[str, Any]:
    # per version, one bar per step of the update, in the order a device goes through them
    steps = ["started", "applied", "confirmed", "rolled_back"]
    return _spec(alt.Chart(TABLE).transform_fold(list[Any](steps), as_=["step", "devices"])
                 .mark_bar()
                 .encode(y=alt.Y("version:N", title=None),
                         yOffset=alt.YOffset("step:N", sort=steps),
                         x=alt.X("devices:Q", title="devices"),
                         color=alt.Color("step:N", sort=steps, title=None),
                         tooltip=["version:N", "step:N", "devices:Q"]))


def environment(segmented: bool) -> dict[str, Any]:
    return _spec(alt.Chart(TABLE).transform_calculate(
        band="datum.temp_from_c + '–' + (datum.temp_from_c + 2) + ' °C'").mark_bar().encode(
        x=alt.X("band:N", sort=alt.EncodingSortField("temp_from_c"), title="temperature band",
                axis=alt.Axis(labelAngle=0, labelOverlap=True)),
        y=alt.Y("usage_per_device_hour:Q", title="usage events per device-hour"),
        tooltip=["band:N", alt.Tooltip("device_hours:Q", format=","),
                 alt.Tooltip("usage_events:Q", format=","),
                 alt.Tooltip("usage_per_device_hour:Q", format=".3f")]))


def models(segmented: bool) -> dict[str, Any]:
    # a dot for the median and a line from the 10th to the 90th percentile, on an axis
    # that does not start at 0: medians a degree apart would look equal as bars
    base = alt.Chart(TABLE).encode(
        y=alt.Y("hw:N", title=None),
        tooltip=["hw:N", "devices:Q", alt.Tooltip("readings:Q", format=","),
                 "p10_temperature_c:Q", "median_temperature_c:Q", "p90_temperature_c:Q",
                 "median_humidity_pct:Q"])
    spread = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("p10_temperature_c:Q", title="temperature °C (10th, 50th, 90th percentile)",
                scale=alt.Scale(zero=False)), x2="p90_temperature_c:Q")
    median = base.mark_point(filled=True, size=90).encode(x="median_temperature_c:Q")
    return _spec(alt.layer(spread, median, data=TABLE))


def experiment(segmented: bool) -> dict[str, Any]:
    # relative lift of each variant over A with its interval; the 0 line is "no change"
    base = alt.Chart(TABLE).encode(
        y=alt.Y("comparison:N", title=None),
        tooltip=["variant:N", "metric:N", alt.Tooltip("relative_lift:Q", format="+.1%"),
                 alt.Tooltip("rel_low:Q", format="+.1%", title="interval low"),
                 alt.Tooltip("rel_high:Q", format="+.1%", title="interval high"),
                 alt.Tooltip("p_holm:Q", format=".4f"), "verdict:N"])
    interval = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("rel_low:Q", title="relative lift over A (CUPED), 95% interval",
                axis=alt.Axis(format="+.0%")), x2="rel_high:Q")
    point = base.mark_point(filled=True, size=90).encode(
        x="relative_lift:Q", color=alt.Color("verdict:N", title=None, scale=alt.Scale(
            domain=["significant", "not significant"], range=["#2ca02c", "#888888"])))
    zero = alt.Chart(TABLE).mark_rule(color="#888", strokeDash=[4, 4]).encode(
        x=alt.datum(0))
    return _spec(alt.layer(interval, point, zero, data=TABLE))


@cache
def spec(name: str, segmented: bool) -> dict[str, Any]:
    """The chart named `name`, built and schema-checked once per process."""
    return dict(BUILDERS[name](segmented))


BUILDERS = {f.__name__: f for f in (activity, lifecycle, retention, features, funnel, sessions,
                                    firmware, health_weekly, health, updates, environment,
                                    models, experiment)}


@cache
def javascript() -> str:
    """Vega, Vega-Lite and vega-embed as one script, from the vl-convert package: no
    download at build or view time, and the version matches the specs Altair writes."""
    import vl_convert

    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    globals_snippet = ("window.vegaEmbed = vegaEmbed; window.vega = vega; "
                       "window.vegaLite = vegaLite;")
    return str(vl_convert.javascript_bundle(globals_snippet, vl_version=major_minor))
