"""`fleetpulse`: one console script, a subcommand per job.

Each subsystem registers its own subcommands; this module only dispatches and turns
errors meant for people into one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from . import config
from .errors import UserError


def build_parser() -> argparse.ArgumentParser:
    from fleetpulse.analytics import cli as analytics_cli
    from fleetpulse.firmware import cli as firmware_cli
    from fleetpulse.gateway import broker_cli, devices_cli, gateway_cli
    from fleetpulse.ingest import cli as ingest_cli
    from fleetpulse.simulators import cli as simulators_cli

    parser = argparse.ArgumentParser(
        prog="fleetpulse",
        description="Device telemetry from MQTT to Parquet to product metrics.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    simulators_cli.register_demo(sub)
    broker_cli.register(sub)
    ingest_cli.register(sub)
    ingest_cli.register_compact(sub)
    simulators_cli.register(sub)
    simulators_cli.register_capture(sub)
    analytics_cli.register(sub)
    devices_cli.register(sub)
    gateway_cli.register(sub)
    firmware_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    config.setup_logging(args.verbose)
    try:
        code = args.func(args)
    except UserError as e:
        # soft_wrap: one line whatever the width, so logs and scripts get it whole
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
