"""`fleetpulse explain METRIC --baseline A..B --compare C..D`: the root cause of a change."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from fleetpulse import config
from fleetpulse.output import add_format_arg

from . import DEFAULT_FEATURE
from .explain import DIMENSIONS, METRICS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="which devices' firmware, model, place or conditions moved a metric",
        description="Compare METRIC between two periods and rank the groups of devices "
                    "(1 to 3 of firmware, model, age, temperature and humidity band, "
                    "connectivity band, experiment variant, attribute) by the share of the "
                    "change they account for. A change within chance is said to be so, "
                    "not explained (docs/explain.md).")
    config.add_data_arg(p)
    p.add_argument("metric", choices=list(METRICS), metavar="METRIC",
                   help=f"one of {', '.join(METRICS)}")
    p.add_argument("--baseline", type=_period, required=True, metavar="FROM..TO",
                   help="the period before, UTC days inclusive, e.g. 2026-01-01..2026-01-14")
    p.add_argument("--compare", type=_period, required=True, metavar="FROM..TO",
                   help="the period after, e.g. 2026-02-01..2026-02-14")
    p.add_argument("--dims", type=_dims, metavar="D,D,...",
                   help=f"only these dimensions ({', '.join(DIMENSIONS)}, attr:NAME, "
                        "variant:KEY; default all)")
    p.add_argument("--max-dims", type=int, default=3,
                   help="values combined in one explanation, 1-3 (default %(default)s)")
    p.add_argument("--feature", default=DEFAULT_FEATURE,
                   help="feature_adoption: the feature (default %(default)s)")
    add_format_arg(p)
    p.set_defaults(func=_explain)


def _period(value: str) -> tuple[date, date]:
    lo, sep, hi = value.partition("..")
    try:
        if not sep:
            raise ValueError
        return config.day(lo), config.day(hi)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"{value!r} is not FROM..TO, e.g. "
                                         "2026-01-01..2026-01-14") from None


def _dims(value: str) -> list[str]:
    return [d.strip() for d in value.split(",") if d.strip()]


def _explain(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fleetpulse.output import print_rows, print_table

    from .cli import open_dataset
    from .explain import explain

    con = open_dataset(args.data)
    result = explain(con, args.metric, args.baseline, args.compare, feature=args.feature,
                     dims=args.dims, max_dims=args.max_dims)
    if args.format == "json":
        from fleetpulse.output import json_value

        json.dump(result.to_dict(), sys.stdout, indent=1, default=json_value)
        sys.stdout.write("\n")
    elif args.format == "csv":
        print_rows(result.columns or ["element"], result.rows, "csv")
    else:
        Console(highlight=False).print(result.summary)
        if result.rows:
            # the columns a person compares; csv and json carry every one
            rows = []
            for r in result.rows:
                e = dict(zip(result.columns, r, strict=True))
                rr = (f"{e['risk_ratio']:.2f} [{e['rr_low']:.2f}, {e['rr_high']:.2f}]"
                      if e["risk_ratio"] is not None else "")
                rows.append((" & ".join(e["element"]), e["devices"],
                             f"{e['explanatory_power']:.0%}", e["before"], e["after"], rr,
                             e["surprise"], e["z"]))
            print_table(["devices where", "devices", "share of change", "before", "after",
                         "risk ratio [95%]", "surprise", "z"], rows)
    return 0
