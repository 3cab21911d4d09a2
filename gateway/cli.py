"""`fleetpulse`: one console script, a subcommand per job.

Each subsystem registers its own subcommands; this module only dispatches and turns
errors meant for people into one line on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from rich.console import Console

from . import config
from .broker import DEFAULT_CONF, Broker
from .errors import UserError


def _register_broker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="run mosquitto with the repository's mosquitto.conf",
                       description="Run mosquitto from mosquitto.conf until Ctrl-C.")
    p.add_argument("--port", type=int, default=int(config.env("BROKER_PORT", "1883") or 1883),
                   help="listener port (env FLEETPULSE_BROKER_PORT, default %(default)s)")
    p.add_argument("--data", type=Path, default=Path(config.env("BROKER_DATA", "broker-data")
                                                     or "broker-data"),
                   help="persistence directory (env FLEETPULSE_BROKER_DATA, default %(default)s)")
    p.add_argument("--tls-port", type=int,
                   default=int(config.env("BROKER_TLS_PORT", "8883") or 8883),
                   help="TLS listener port (env FLEETPULSE_BROKER_TLS_PORT, default %(default)s)")
    p.add_argument("--registry", type=Path, default=None,
                   help="device registry (default: DATA/registry, created on first start)")
    p.add_argument("--certs", type=Path, default=None,
                   help="TLS certificates (default: DATA/certs, created on first start)")
    p.add_argument("--conf", type=Path, default=DEFAULT_CONF, help="config file to render")
    p.set_defaults(func=_broker)


def _broker(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    # SIGTERM (a service manager) and SIGINT (Ctrl-C, also when started from a script
    # that ignores it) both stop mosquitto, which runs in a session of its own.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Broker(args.port, args.data, args.conf, args.tls_port, args.registry, args.certs) as b:
        console.print(f"mosquitto listening on {b.address} and TLS on port {b.tls_port} "
                      f"(data in {b.data_dir}); Ctrl-C stops it\n"
                      f"accounts: {b.registry.dir} (add devices with `fleetpulse devices add "
                      f"ID --registry {b.registry.dir}`); CA for devices: {b.certs / 'ca.crt'}")
        while b.proc is not None and b.proc.poll() is None and not stop.wait(0.5):
            pass
        if b.proc is not None and b.proc.poll() not in (None, 0):
            raise UserError(f"mosquitto exited with {b.proc.returncode}: see {b.data_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fleetpulse.analytics import cli as analytics_cli
    from fleetpulse.firmware import cli as firmware_cli
    from fleetpulse.ingest import cli as ingest_cli
    from fleetpulse.simulators import cli as simulators_cli

    from . import devices_cli, gateway_cli

    parser = argparse.ArgumentParser(
        prog="fleetpulse",
        description="Device telemetry from MQTT to Parquet to product metrics.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    simulators_cli.register_demo(sub)
    _register_broker(sub)
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
