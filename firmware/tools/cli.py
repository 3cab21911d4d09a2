"""`fleetpulse firmware build|run|check|config|bench-board`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from fleetpulse import config
from fleetpulse.errors import UserError, warn
from fleetpulse.output import add_format_arg, print_table

from . import BOARDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("firmware", help="build, type-check and run the device firmware",
                       description="The MicroPython firmware in firmware/: bundles for "
                                   "boards, and the firmware-in-the-loop simulator.")
    fw = p.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)

    b = fw.add_parser("build", help="compile the firmware with mpy-cross into a bundle")
    b.add_argument("--board", choices=sorted(BOARDS), required=True)
    b.add_argument("--out", type=Path, required=True, help="bundle directory (replaced)")
    b.add_argument("--romfs", action="store_true",
                   help="also write romfs.img, for boards with a ROM partition")
    add_format_arg(b)
    b.set_defaults(func=_build)

    r = fw.add_parser("run", help="run the real firmware in MicroPython on the sim board",
                      description="Boot the firmware in the MicroPython unix port with a "
                                  "folder as its flash; sensors, buttons and network come "
                                  "from the scenario, MQTT goes to a real broker.")
    r.add_argument("--board", choices=["sim"], default="sim")
    r.add_argument("--config", type=Path, default=None,
                   help="config.json to copy onto the flash (default: keep the flash's own)")
    r.add_argument("--scenario", type=Path, default=None, help="scenario JSON for the sim board")
    r.add_argument("--flash", type=Path, default=Path("sim-flash"),
                   help="folder standing in for the device's flash (default %(default)s)")
    r.add_argument("--bundle", type=Path, default=None,
                   help="run a built bundle instead of the sources in firmware/")
    r.add_argument("--heap", default=None, help="MicroPython heap size, e.g. 40K")
    r.add_argument("--romfs", type=Path, default=None,
                   help="run the modules from this ROMFS image, mounted at /rom")
    r.add_argument("--ca", type=Path, default=None,
                   help="the broker's CA certificate, copied onto the flash under the name "
                        "config.json gives (mqtt.ca), e.g. broker-data/certs/ca.crt")
    r.add_argument("--timeout", type=float, default=float(config.env("FIRMWARE_TIMEOUT", "0")
                                                          or 0), metavar="SECONDS",
                   help="exit 3 if the device has not connected to its broker within SECONDS "
                        "(real time), or stops without connecting; for CI (env "
                        "FLEETPULSE_FIRMWARE_TIMEOUT, default 0: wait as a board would)")
    r.set_defaults(func=_run)

    bb = fw.add_parser("bench-board", help="a board without hardware, on a serial port of "
                                           "its own, for mpremote and flashing",
                       description="The MicroPython unix port behind a pseudo-terminal with a "
                                   "folder as its flash: mpremote (or `firmware flash`) "
                                   "connects to the printed port as to a USB board, and it "
                                   "comes back after a reset as a board does.")
    bb.add_argument("--flash", type=Path, default=Path("bench-flash"),
                    help="folder standing in for the board's flash (default %(default)s)")
    bb.add_argument("--scenario", type=Path, default=None,
                    help="scenario JSON for the sim board the firmware runs on")
    bb.add_argument("--baud", type=int, default=None,
                    help="pace the port like a serial line of this speed (default: as fast "
                         "as a pty goes); 115200 is what most boards' USB serial runs at")
    bb.set_defaults(func=_bench_board)

    f = fw.add_parser("flash", help="provision a board, copy the firmware, and wait for "
                                    "its first report",
                      description="From a board (or every attached board) to a registered "
                                  "device that has reported: runtime check (or write with "
                                  "--runtime), registry account, bundle copy with hash skip "
                                  "and read-back check, config.json from the site file, reset, "
                                  "then the device's `online` and first telemetry at the "
                                  "broker. Idempotent: run it again and it copies nothing.")
    from .flash_cli import add_arguments

    add_arguments(f)
    f.set_defaults(func=_flash)

    c = fw.add_parser("check", help="type-check the firmware against a board's stubs")
    c.add_argument("--board", choices=["esp32", "rp2"], action="append",
                   help="board (repeatable; default both)")
    c.set_defaults(func=_check)

    g = fw.add_parser("config", help="print a config.json for a registered device")
    g.add_argument("device_id")
    config.add_secret_args(g, "password", "DEVICE_PASSWORD",
                           "device's MQTT password (the one `devices add` printed)")
    g.add_argument("--host", help="broker address as devices see it (the gateway's address "
                                  "or name on their network; required)")
    g.add_argument("--port", type=config.tcp_port, default=8883)
    g.add_argument("--no-tls", action="store_true", help="plain MQTT (loopback/testing only)")
    g.add_argument("--ssid", default="", help="WiFi network")
    config.add_secret_args(g, "wifi_password", "WIFI_PASSWORD", "WiFi password")
    config.add_registry_arg(g)
    g.set_defaults(func=_config)


def _build(args: argparse.Namespace) -> int:
    from .bundle import build

    m = build(args.board, args.out, romfs=args.romfs)
    total = [("total", m["total_bytes"])] if args.format == "table" else []
    print_table(["file", "bytes"], [*((f["path"], f["bytes"]) for f in m["files"]), *total],
                args.format,
                title=f"firmware {m['firmware_version']} for {m['board']} ({m['arch']})")
    # what to do next is for people: on stderr, so --format json stays one document
    say = Console(stderr=True)
    if "romfs" in m:
        say.print(f"ROMFS image {args.out}/romfs.img ({m['romfs']['bytes']:,} bytes); "
                        f"deploy it with `mpremote romfs deploy {args.out}/romfs.img` and "
                        f"copy only main.py: `mpremote cp {args.out}/main.py :`")
    else:
        say.print(f"bundle in {args.out}; copy it onto a board with "
                        f"`mpremote cp -r {args.out}/. :`")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .loop import run

    return run(args.flash, args.config, args.scenario, args.bundle, args.heap, args.romfs,
               args.ca, args.timeout)


def _bench_board(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .bench_board import BenchBoard

    from .scenario import check_scenario

    if args.scenario:
        check_scenario(args.scenario)
    env = {"FLEETPULSE_SCENARIO": str(args.scenario.resolve())} if args.scenario else {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with BenchBoard(args.flash, env, baud=args.baud) as board:
        # the port on stdout, alone on its line, for scripts: PORT=$(... | head -1)
        print(board.port, flush=True)
        Console(stderr=True).print(f"bench board on {board.port}, flash {args.flash}: "
                                   f"try `mpremote connect {board.port} ls`; Ctrl-C stops it")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


def _flash(args: argparse.Namespace) -> int:
    from .flash_cli import run_flash

    return run_flash(args)


def _check(args: argparse.Namespace) -> int:
    from .typecheck import check

    failed = []
    for board in args.board or ["esp32", "rp2"]:
        ok, out = check(board)
        Console().print(f"{board}: {'ok' if ok else 'type errors'}", highlight=False)
        if not ok:
            Console().print(out, highlight=False, markup=False)
            failed.append(board)
    if failed:
        raise UserError(f"the firmware does not type-check for {', '.join(failed)}")
    return 0


def _config(args: argparse.Namespace) -> int:
    if not args.host:
        # a guessed default address would be written into the device without a word
        raise UserError("firmware config needs --host: the broker's address as the device "
                        "sees it (the gateway's address or name on the device's network)")
    password = config.secret(args, "password", prompt=True)
    if not password:
        raise UserError("firmware config needs the device's password: --password-file FILE, "
                        "FLEETPULSE_DEVICE_PASSWORD, or run it in a terminal to be asked")
    _check_device(args.registry, args.device_id, password)
    cfg = {
        "device_id": args.device_id,
        "wifi": {"ssid": args.ssid,
                 # an open network has none; asked for only when an SSID is given
                 "password": config.secret(args, "wifi_password", prompt=bool(args.ssid)) or ""},
        "mqtt": {"host": args.host, "port": args.port, "username": args.device_id,
                 "password": password, "tls": not args.no_tls,
                 **({} if args.no_tls else {"ca": "ca.crt"})},
    }
    print(json.dumps(cfg, indent=2))
    return 0


def _check_device(registry: Path, device_id: str, password: str) -> None:
    """A config.json whose device or password the broker would refuse fails at the desk,
    not on the board; without a registry at hand, say that nothing was checked."""
    from fleetpulse.gateway.registry import Registry

    reg = Registry(registry)
    if not reg.exists:
        warn(f"no device registry at {registry}: {device_id} and its password are not "
             "checked (pass --registry DIR)")
        return
    reg.require_active(device_id)
    if not reg.verify(device_id, password):
        raise UserError(f"that is not {device_id}'s current password (mistyped, rotated or "
                        f"revoked): `fleetpulse devices rotate {device_id}` prints a new one")
