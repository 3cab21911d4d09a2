"""`fleetpulse gateway certs|presence|serial`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from pathlib import Path

from rich.console import Console

from . import config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="TLS certificates, presence service, serial bridge",
                       description="Gateway services around the broker.")
    gsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = gsub.add_parser("certs", help="create a CA and a server certificate for TLS (8883)")
    c.add_argument("--out", type=Path, required=True, help="directory to write them to")
    c.add_argument("--host", action="append", dest="hosts",
                   help="a name or address devices use for the broker (repeatable; default: "
                        "localhost, this host's name, 127.0.0.1)")
    c.set_defaults(func=_certs)

    pr = gsub.add_parser("presence", help="record devices going online and offline",
                         description="Watch devices/+/status and write every change to the "
                                     "dataset's presence table (see the devices view).")
    config.add_broker_arg(pr)
    config.add_data_arg(pr)
    config.add_auth_args(pr, "fleetpulse-gateway")
    pr.set_defaults(func=_presence)

    s = gsub.add_parser("serial", help="publish envelopes a wired device writes to a serial "
                                       "port",
                        description="Read contract-v1 envelopes as JSON lines from a serial "
                                    "port and publish them at QoS 1 for the device.")
    s.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0 (a stable "
                                                 "/dev/serial/by-id/... path survives replugging)")
    s.add_argument("--baud", type=int, default=115200, help="baud rate (default %(default)s)")
    s.add_argument("--stats-file", type=Path, help="keep live counters in this JSON file")
    config.add_broker_arg(s)
    config.add_auth_args(s, "fleetpulse-gateway")
    s.set_defaults(func=_serial)


def _certs(args: argparse.Namespace) -> int:
    from .certs import create_certs

    paths = create_certs(args.out, args.hosts)
    Console().print(f"wrote {', '.join(str(p) for p in paths.values())}\n"
                    f"give devices {paths['ca.crt']}; start the broker with --certs {args.out}")
    return 0


def _presence(args: argparse.Namespace) -> int:
    from .presence import PresenceConfig, run_presence

    host, port = config.parse_broker(args.broker)
    username, password = config.resolve_auth(args)
    cfg = PresenceConfig(host, port, args.data, username, password,
                         args.registry if args.registry.exists() else None)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_presence(cfg, stop)

    asyncio.run(main())
    return 0


def _serial(args: argparse.Namespace) -> int:
    from .registry import Registry
    from .serial_bridge import SerialBridge

    host, port = config.parse_broker(args.broker)
    username, password = config.resolve_auth(args)
    registry = Registry(args.registry) if (args.registry / "registry.json").exists() else None
    bridge = SerialBridge(args.port, host, port, username, password, registry, args.baud,
                          args.stats_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bridge.run(stop)
    return 0
