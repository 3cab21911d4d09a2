"""`fleetpulse simulate` and `fleetpulse demo`."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from rich.console import Console

from fleetpulse.gateway import config

from .fleet import DEFAULT_START


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="publish a deterministic virtual fleet over MQTT",
                       description="Publish contract-v1 telemetry of a virtual fleet at QoS 1 "
                                   "in accelerated time and write the ground truth.")
    config.add_broker_arg(p)
    _fleet_args(p)
    p.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START,
                   help="first simulated UTC day (default %(default)s)")
    p.add_argument("--truth", type=Path, default=None, help="write the ground truth JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    config.add_auth_args(p, "fleetpulse-simulator")
    p.set_defaults(func=_simulate)


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="broker + ingest + simulated fleet + metrics, in one go",
                       description="Start mosquitto and ingest, simulate a fleet, print the "
                                   "metrics, stop everything.")
    _fleet_args(p)
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep broker data, dataset and truth here (default: a temporary "
                        "directory, removed at the end)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.devices, args.days, args.seed, args.workdir)


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return n


def _fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=_positive, default=200,
                   help="fleet size (default %(default)s)")
    p.add_argument("--days", type=_positive, default=30,
                   help="days to simulate (default %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")


def _simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate

    host, port = config.parse_broker(args.broker)
    username, password = config.resolve_auth(args)
    truth = simulate(host, port, args.devices, args.days, args.seed, args.truth, args.start,
                     progress=not args.no_progress, username=username, password=password)
    Console(stderr=True).print(
        f"published {truth['messages']:,} messages, {truth['records']:,} records"
        + (f"; truth in {args.truth}" if args.truth else "")
    )
    return 0
