"""`fleetpulse broker`: mosquitto from the repository's mosquitto.conf, in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from rich.console import Console

from fleetpulse import config
from fleetpulse.errors import UserError

from .broker import DEFAULT_CONF, Broker


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="run mosquitto with the repository's mosquitto.conf",
                       description="Run mosquitto from mosquitto.conf until Ctrl-C.")
    p.add_argument("--port", type=config.tcp_port,
                   default=int(config.env("BROKER_PORT", "1883") or 1883),
                   help="listener port (env FLEETPULSE_BROKER_PORT, default %(default)s)")
    # --broker-data, not --data: everywhere else --data is the dataset ingest writes
    p.add_argument("--broker-data", "--data", dest="broker_data", type=Path,
                   action=config.renamed("--data"),
                   default=Path(config.env("BROKER_DATA", "broker-data") or "broker-data"),
                   help="the broker's own folder: persistence, accounts, certificates (env "
                        "FLEETPULSE_BROKER_DATA, default %(default)s)")
    p.add_argument("--tls-port", type=config.tcp_port,
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
    with Broker(args.port, args.broker_data, args.conf, args.tls_port, args.registry,
                args.certs) as b:
        console.print(f"mosquitto listening on {b.address} and TLS on port {b.tls_port} "
                      f"(data in {b.data_dir}); Ctrl-C stops it\n"
                      f"accounts: {b.registry.dir} (add devices with `fleetpulse devices add "
                      f"ID --registry {b.registry.dir}`); CA for devices: {b.certs / 'ca.crt'}")
        while b.proc is not None and b.proc.poll() is None and not stop.wait(0.5):
            pass
        if b.proc is not None and b.proc.poll() not in (None, 0):
            raise UserError(f"mosquitto exited with {b.proc.returncode}: see {b.data_dir}")
    return 0
