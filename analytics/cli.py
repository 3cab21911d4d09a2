"""`fleetpulse sql`, `fleetpulse metrics`, `fleetpulse catalog`."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from fleetpulse import config
from fleetpulse.errors import UserError, warn
from fleetpulse.files import write_replacing
from fleetpulse.output import add_format_arg

from . import DEFAULT_FEATURE
from .sqltext import sql_str

# DuckDB and pyarrow load only when an analytics command runs, so that `fleetpulse
# ingest` and the other long-running commands do not carry them in memory.
if TYPE_CHECKING:
    import duckdb

SUMMARY_QUERIES = {
    "Daily active devices and temperature": """
        SELECT coalesce(d.day, t.day) AS day, d.dau AS active_devices,
               round(t.median_temperature_c, 2) AS median_temperature_c, t.readings
        FROM active_devices() d FULL JOIN daily_temperature() t USING (day)
        ORDER BY day""",
    "Feature adoption (share of active devices that used each feature)": """
        SELECT feature, devices, round(100 * share_of_active, 1) AS pct_of_active,
               uses_per_device
        FROM feature_adoption() ORDER BY devices DESC, feature""",
}


EXPERIMENT_DESCRIPTION = (
    "verdict for --key, every variant against A: CUPED-adjusted lift (pre-period: 14 days "
    "before exposure), 95% and delta-method relative intervals, Holm-adjusted p-values, an "
    "anytime-valid sequential interval and the day it detected, guardrails (crash-free "
    "share, reboots, connectivity), sample-ratio check at p < 0.001")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sql", help="run SQL over the dataset's views",
                       description="Run one SQL query over the views readings, events, "
                                   "quarantine, devices and every metric view.")
    config.add_data_arg(p)
    p.add_argument("query", help='for example "SELECT count(*) FROM events"')
    add_format_arg(p)
    p.set_defaults(func=_sql)

    p = sub.add_parser("metrics", help="print product metrics (--list shows them all)",
                       description="Without NAME: daily active devices, feature adoption "
                                   "and daily median temperature. With NAME: that metric. "
                                   "Every metric is also a SQL table macro of that name.")
    config.add_data_arg(p)
    p.add_argument("name", nargs="?", help="metric name (see --list), or 'experiment'")
    p.add_argument("--list", action="store_true", help="list the metrics, one line each")
    _add_range_args(p)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="another parameter of the metric, e.g. --param step2=session_start")
    p.add_argument("--key", help="experiment: the experiment key")
    p.add_argument("--feature", default=DEFAULT_FEATURE, help="experiment: the feature whose use "
                   "is compared (default %(default)s)")
    p.add_argument("--share-b", type=float, default=0.5,
                   help="experiment: planned share of variant B (default %(default)s)")
    p.add_argument("--min-sample", type=int, default=100,
                   help="experiment: devices per variant below which there is no verdict "
                        "(default %(default)s)")
    p.add_argument("--tuning-n", type=int, default=1000, metavar="N",
                   help="experiment: exposed devices at which the sequential test's "
                        "interval is tightest (default %(default)s)")
    p.add_argument("--no-cuped", action="store_true",
                   help="experiment: compare raw usage, without the pre-period adjustment")
    add_format_arg(p)
    p.set_defaults(func=_metrics)

    p = sub.add_parser("report", help="write the dashboard as one self-contained HTML file",
                       description="A chart per metric group with its table, data and code "
                                   "inline: works offline, can be mailed.")
    config.add_data_arg(p)
    p.add_argument("--out", type=Path, default=Path("report.html"),
                   help="file to write (default %(default)s)")
    _add_view_args(p)
    _add_experiment_arg(p)
    p.set_defaults(func=_report)

    p = sub.add_parser("dashboard", help="serve the dashboard locally, fresh on every load",
                       description="Serve the report page; each load re-queries the dataset.")
    config.add_data_arg(p)
    p.add_argument("--port", type=config.tcp_port, default=8050, help="port (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s: this machine only)")
    _add_experiment_arg(p)
    p.set_defaults(func=_dashboard)

    p = sub.add_parser("catalog", help="write a DuckDB file of views for BI tools",
                       description="Write a DuckDB database holding only views over the "
                                   "dataset's absolute paths; open it read-only.")
    config.add_data_arg(p)
    p.add_argument("--out", type=Path, default=Path("fleet.duckdb"),
                   help="database file to write (default %(default)s)")
    p.set_defaults(func=_catalog)


def _experiment_spec(value: str) -> tuple[str, str]:
    key, _, feature = value.partition(":")
    if not key:
        raise argparse.ArgumentTypeError(f"{value!r}: use KEY or KEY:FEATURE")
    return key, feature or DEFAULT_FEATURE


def _add_range_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=config.day, help="first UTC day (YYYY-MM-DD)")
    p.add_argument("--until", type=config.day, help="last UTC day (YYYY-MM-DD)")
    p.add_argument("--by", type=_segmentation, metavar="fw|hw|variant:KEY[:SHARE_B]|attr:NAME",
                   help="break down by firmware, hardware model, experiment variant "
                        "(SHARE_B: B's planned share, default 0.5) or device attribute")


def _check_range(args: argparse.Namespace) -> None:
    if args.since and args.until and args.since > args.until:
        raise UserError(f"--since {args.since} is after --until {args.until}")


def _add_view_args(p: argparse.ArgumentParser) -> None:
    """The dashboard's view, fixed in a report file."""
    _add_range_args(p)
    p.add_argument("--feature", default=DEFAULT_FEATURE, help="the feature whose uses the "
                   "experiment panels compare (default %(default)s)")


def _add_experiment_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", action="append", type=_experiment_spec, default=[],
                   metavar="KEY[:FEATURE]",
                   help="add a panel with this experiment's analysis (feature default "
                        "eco_mode); may be given more than once")


def open_dataset(data: str | Path) -> duckdb.DuckDBPyConnection:
    from .dataset import connect

    config.require_dataset(str(data))
    return connect(data)


def _sql(args: argparse.Namespace) -> int:
    import duckdb

    from fleetpulse.output import print_table

    from .dataset import query

    con = open_dataset(args.data)
    try:
        result = query(con, args.query)
    except duckdb.Error as e:
        raise UserError(f"query failed: {str(e).splitlines()[0]}") from None
    if result.columns:
        print_table(result.columns, result.rows, args.format)
    return 0


def print_metrics(data_dir: str | Path, console: Console | None = None,
                  fmt: str = "table") -> None:
    """The summary: each query as a table, or as JSON one object keyed by title."""
    from fleetpulse.output import json_value, print_table

    from .dataset import query

    con = open_dataset(data_dir)
    if fmt == "json":
        doc = {}
        for title, sql in SUMMARY_QUERIES.items():
            r = query(con, sql)
            doc[title] = [{c: json_value(v) for c, v in zip(r.columns, row, strict=True)}
                          for row in r.rows]
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if fmt == "csv":
        raise UserError("the summary is several tables, CSV holds one: name a metric "
                        "(fleetpulse metrics active_devices --format csv) or use --format json")
    for title, sql in SUMMARY_QUERIES.items():
        result = query(con, sql)
        print_table(result.columns, result.rows, title=title, console=console)


def _metrics(args: argparse.Namespace) -> int:
    from .dataset import metric_catalog

    catalog = {m.name: m for m in metric_catalog()}
    if args.list:
        from fleetpulse.output import print_table

        listing = [(m.name, m.description) for m in catalog.values()]
        listing.append(("experiment", EXPERIMENT_DESCRIPTION))
        if args.format == "table":
            for name, description in listing:
                Console(highlight=False).print(f"[bold]{name:24s}[/] {description}")
        else:
            print_table(["metric", "description"], listing, args.format)
        return 0
    _check_range(args)
    if args.name is None:
        ignored = [flag for flag, given in (("--since", args.since), ("--until", args.until),
                                            ("--by", args.by), ("--param", args.param),
                                            ("--key", args.key)) if given]
        if ignored:
            raise UserError(f"the summary takes no {', '.join(ignored)}: name a metric "
                            "(`fleetpulse metrics --list` shows them)")
        print_metrics(args.data, fmt=args.format)
        return 0
    if args.name == "experiment":
        return _experiment(args)
    if args.name not in catalog:
        raise UserError(f"no metric {args.name!r}: `fleetpulse metrics --list` shows them")
    metric = catalog[args.name]
    params: dict[str, str] = {}
    if args.since:
        params["since"] = f"DATE '{args.since}'"
    if args.until:
        params["until"] = f"DATE '{args.until}'"
    if args.by:
        params["segment_by"] = sql_str(args.by)
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--param {item!r} is not NAME=VALUE")
        params[name] = value if value.replace(".", "", 1).isdigit() else sql_str(value)
    unknown = set(params) - set(metric.parameters)
    if unknown:
        raise UserError(f"{args.name} takes no {', '.join(sorted(unknown))}: its parameters "
                        f"are {', '.join(metric.parameters)}")
    sql = f"SELECT * FROM {args.name}({', '.join(f'{k} := {v}' for k, v in params.items())})"
    import duckdb

    from fleetpulse.output import print_table

    from .dataset import query

    con = open_dataset(args.data)
    try:
        result = query(con, sql)
    except duckdb.Error as e:
        raise UserError(f"{args.name} failed: {str(e).splitlines()[0]}") from None
    print_table(result.columns, result.rows, args.format, title=metric.description)
    if args.name == "funnel":
        _warn_unknown_steps(con, args.param)
    if args.by and args.by.startswith("variant:"):
        _warn_unreported_experiment(con, args.by.split(":")[1])
    return 0


def _warn_unreported_experiment(con: duckdb.DuckDBPyConnection, key: str) -> None:
    """The hash assigns every device a variant of any key, so a mistyped key still
    splits the fleet in two, plausibly. Firmware that applies an experiment reports it
    (setting_changed experiment.KEY): when no device did, say so (on stderr; the split
    by hash stands, for a fleet whose firmware never reports)."""
    from .dataset import query

    keys = [r[0] for r in query(con, "SELECT DISTINCT experiment FROM experiment_reports "
                                     "ORDER BY 1").rows]
    if key not in keys:
        warn(f"no device reported applying experiment {key!r}, so its variants below are "
             f"the hash assignment alone (experiments reported: {', '.join(keys) or 'none'})")


def _warn_unknown_steps(con: duckdb.DuckDBPyConnection, given: list[str]) -> None:
    """A funnel step that names no event in the dataset counts no device: right, but most
    likely a typo, so say so (on stderr; the table stands)."""
    from .dataset import query

    for item in given:
        name, _, value = item.partition("=")
        if not name.startswith("step"):
            continue
        event, _, feature = value.partition(":")
        cond = f"event = {sql_str(event)}" + (f" AND feature = {sql_str(feature)}"
                                              if feature else "")
        if query(con, f"SELECT EXISTS (SELECT 1 FROM events WHERE {cond})").rows[0][0]:
            continue
        names = [r[0] for r in query(con, "SELECT DISTINCT event FROM events ORDER BY 1").rows]
        warn(f"{name}: no event {value!r} in the dataset, so no device reaches it "
             f"(events seen: {', '.join(names) or 'none'})")


def _segmentation(value: str) -> str:
    """--by: fw, hw, variant:KEY with an optional :SHARE_B, or attr:NAME (the metrics'
    segment_by)."""
    from .panels import check_breakdown

    if value == "all":  # the metrics' default, not a breakdown to ask for
        raise argparse.ArgumentTypeError("'all': leave --by out for the whole fleet")
    try:
        return check_breakdown(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _experiment(args: argparse.Namespace) -> int:
    from .experiment_query import experiment_devices
    from .experiments import analyze

    if not args.key:
        raise UserError("experiment needs --key (the experiment key devices were assigned by)")
    con = open_dataset(args.data)
    _warn_unreported_experiment(con, args.key)
    devices = experiment_devices(con, args.key, args.feature, args.share_b, args.since,
                                 args.until)
    r = analyze(devices, args.share_b, args.min_sample, tuning_n=args.tuning_n,
                use_cuped=not args.no_cuped)
    if args.format == "json":
        _print_experiment_json(args, r)
    elif args.format == "csv":
        _print_experiment_csv(r)
    else:
        _print_experiment_table(args, r)
    return 0


def _experiment_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per comparison and per guardrail: the experiment's CSV and JSON."""
    out = []
    for c in r["comparisons"]:
        row = dataclasses.asdict(c)
        row["significant"] = c.significant
        row["detected_on"] = c.detected_on.isoformat() if c.detected_on else None
        out.append(row)
    return out


def _print_experiment_json(args: argparse.Namespace, r: dict[str, Any]) -> None:
    doc = {k: v for k, v in r.items() if k not in ("comparisons", "guardrails")}
    doc.update(key=args.key, feature=args.feature, comparisons=_experiment_rows(r),
               guardrails=[dict(dataclasses.asdict(g), flagged=g.flagged)
                           for g in r["guardrails"]])
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


def _print_experiment_csv(r: dict[str, Any]) -> None:
    rows = _experiment_rows(r) + [
        {"variant": g.variant, "metric": f"guardrail:{g.metric}", "a": g.a, "b": g.b,
         "p_value": g.p_worse, "significant": g.flagged} for g in r["guardrails"]]
    fields = list(_experiment_rows(r)[0]) if r["comparisons"] else [
        "variant", "metric", "a", "b", "p_value", "significant"]
    w = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)


def _print_experiment_table(args: argparse.Namespace, r: dict[str, Any]) -> None:
    from rich.table import Table

    console = Console()
    exposed = " ".join(f"{v}={n}" for v, n in r["exposed"].items())
    console.print(f"experiment [bold]{args.key}[/], feature [bold]{args.feature}[/]: exposed "
                  f"{exposed}, sample-ratio check p={r['srm_p_value']:.3f}")
    if r["comparisons"]:
        t = Table("variant", "metric", "A", "variant's", "lift", "95% interval", "relative",
                  "p", "p Holm", title="fixed horizon, CUPED-adjusted",
                  title_justify="left")
        s = Table("variant", "metric", "CUPED var ratio", "sequential interval",
                  "p anytime", "detected on", title="sequential (valid at every look)",
                  title_justify="left")
        for c in r["comparisons"]:
            rel = (f"{100 * c.relative_lift:+.1f}% [{100 * c.relative_low:+.1f}%, "
                   f"{100 * c.relative_high:+.1f}%]" if c.relative_lift is not None else "")
            t.add_row(c.variant, c.metric, f"{c.a:.4f}", f"{c.b:.4f}", f"{c.lift:+.4f}",
                      f"[{c.lift_low:+.4f}, {c.lift_high:+.4f}]", rel, f"{c.p_value:.4f}",
                      f"{c.p_holm:.4f}")
            s.add_row(c.variant, c.metric, f"{c.variance_ratio:.3f}",
                      f"[{c.cs_low:+.4f}, {c.cs_high:+.4f}]", f"{c.p_sequential:.4f}",
                      c.detected_on.isoformat() if c.detected_on else "")
        console.print(t)
        console.print(s)
        g = Table("variant", "guardrail", "A", "variant's", "p worse", "p Holm", "flag")
        for x in r["guardrails"]:
            g.add_row(x.variant, x.metric, f"{x.a:.4f}", f"{x.b:.4f}", f"{x.p_worse:.4f}",
                      f"{x.p_holm:.4f}", "[red]worse[/]" if x.flagged else "")
        console.print(g)
        console.print(f"CUPED: {'on' if r['cuped'] else 'off'} (covariate: each device's "
                      f"uses in the 14 days before its exposure); sequential: "
                      f"{r['sequential']}")
    console.print(f"verdict: {r['verdict']}")


def _report(args: argparse.Namespace) -> int:
    from .report import build_report

    config.require_dataset(args.data)
    config.require_out_dir(args.out)
    from .panels import View

    _check_range(args)
    view = View(args.since, args.until, args.by or "all", args.feature)
    html = build_report(args.data, view, args.experiment)
    write_replacing(args.out, html)
    Console().print(f"wrote {args.out} ({len(html) // 1024} KB): open it in any browser")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from .dashboard import make_server

    config.require_dataset(args.data)
    try:
        server = make_server(args.data, args.host, args.port, args.experiment)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror}): choose "
                        "another --port") from None
    Console(stderr=True).print(f"dashboard on http://{args.host}:{server.server_port}/ "
                               "(Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from .dataset import write_catalog

    config.require_dataset(args.data)
    config.require_out_dir(args.out)
    names = write_catalog(args.data, args.out)
    Console().print(f"wrote {args.out} with {len(names)} views and metrics: "
                    f"{', '.join(names)}\n"
                    f"open it read-only: duckdb -readonly {args.out.resolve()}")
    return 0
