"""`fleetpulse gateway certs|presence|serial`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console

from fleetpulse import config
from fleetpulse.errors import UserError
from fleetpulse.output import add_format_arg, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="TLS certificates, presence, provisioning, serial bridge",
                       description="Gateway services around the broker.")
    gsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = gsub.add_parser("certs", help="create a CA and a server certificate for TLS (8883)",
                        description="Create a CA and a server certificate, or --check when "
                                    "they expire. An existing CA is replaced only with "
                                    "--rotate: every deployed device trusts it.")
    c.add_argument("--out", type=Path, required=True, help="directory to write them to")
    c.add_argument("--check", action="store_true",
                   help="show when the certificates in --out expire; exit 1 if one has, or "
                        f"will within {EXPIRY_WARN_DAYS} days")
    c.add_argument("--rotate", action="store_true",
                   help="replace an existing CA (devices then need the new ca.crt)")
    c.add_argument("--host", action="append", dest="hosts",
                   help="a name or address devices use for the broker (repeatable; default: "
                        "localhost, this host's name, 127.0.0.1)")
    add_format_arg(c)
    c.set_defaults(func=_certs)

    pr = gsub.add_parser("presence", help="record devices going online and offline",
                         description="Watch devices/+/status and write every change to the "
                                     "dataset's presence table (see the devices view).")
    config.add_broker_arg(pr)
    config.add_data_arg(pr)
    config.add_auth_args(pr, "fleetpulse-gateway")
    pr.set_defaults(func=_presence)

    pv = gsub.add_parser("provision", help="answer claims: give new devices their accounts",
                         description="Answer provisioning requests of boards flashed with a "
                                     "claim (`fleetpulse devices claim create`): check the "
                                     "claim, create the device's account, send it back.")
    config.add_broker_arg(pv)
    config.add_auth_args(pv, "fleetpulse-provisioner")
    pv.set_defaults(func=_provision)

    s = gsub.add_parser("serial", help="publish envelopes a wired device writes to a serial "
                                       "port",
                        description="Read contract-v1 envelopes as JSON lines from a serial "
                                    "port and publish them at QoS 1 for the device.")
    # --serial-port: --port is a TCP port in every other command
    s.add_argument("--serial-port", "--port", dest="serial_port", required=True,
                   action=config.renamed("--port"),
                   help="serial device, e.g. /dev/ttyACM0 (a stable /dev/serial/by-id/... path "
                        "survives replugging)")
    s.add_argument("--baud", type=int, default=115200, help="baud rate (default %(default)s)")
    s.add_argument("--stats-file", type=Path, help="keep live counters in this JSON file")
    config.add_broker_arg(s)
    config.add_auth_args(s, "fleetpulse-gateway")
    s.set_defaults(func=_serial)


EXPIRY_WARN_DAYS = 30


def _certs(args: argparse.Namespace) -> int:
    from .certs import check_certs, create_certs

    if args.check:
        statuses = check_certs(args.out)
        print_table(["file", "subject", "expires_utc", "days_left"],
                    [(st.name, st.subject, st.not_after.strftime("%Y-%m-%d %H:%M"),
                      st.days_left) for st in statuses], args.format)
        soon = [st.name for st in statuses if st.days_left < EXPIRY_WARN_DAYS]
        if soon:
            print(f"{', '.join(soon)} in {args.out} expire(s) within {EXPIRY_WARN_DAYS} days: "
                  "renew before devices stop connecting", file=sys.stderr)
            return 1
        return 0
    if (args.out / "ca.crt").exists() and not args.rotate:
        raise UserError(f"{args.out} already has a CA that devices trust: pass --rotate to "
                        "replace it (then give every device the new ca.crt), or --check to "
                        "see when it expires")
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

    return _until_signal(lambda stop: run_presence(cfg, stop))


def _provision(args: argparse.Namespace) -> int:
    from .provisioning import ProvisioningConfig, run_provisioning
    from .registry import Registry

    if not Registry(args.registry).exists:
        raise UserError(f"no registry at {args.registry}: pass --registry DIR (where "
                        "`fleetpulse broker` keeps it)")
    host, port = config.parse_broker(args.broker)
    username, password = config.resolve_auth(args)
    cfg = ProvisioningConfig(host, port, args.registry, username, password)

    return _until_signal(lambda stop: run_provisioning(cfg, stop))


def _until_signal(service: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run an asyncio service until SIGINT or SIGTERM sets its stop event."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service(stop)

    asyncio.run(main())
    return 0


def _serial(args: argparse.Namespace) -> int:
    from .registry import Registry
    from .serial_bridge import SerialBridge

    host, port = config.parse_broker(args.broker)
    username, password = config.resolve_auth(args)
    registry = Registry(args.registry) if (args.registry / "registry.json").exists() else None
    bridge = SerialBridge(args.serial_port, host, port, username, password, registry, args.baud,
                          args.stats_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bridge.run(stop)
    return 0
