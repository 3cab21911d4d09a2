"""The command line of `fleetpulse firmware flash`: which boards, under which ids, and
how progress and verdicts are shown (a live table on a terminal, lines otherwise;
verdicts on stdout, everything else on stderr)."""

from __future__ import annotations

import argparse
import json
import string
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table

from fleetpulse import config
from fleetpulse.errors import UserError
from fleetpulse.gateway.registry import Registry

# The flashing machinery (mpremote, esptool, the bundle cache) loads when a flash runs:
# this module's flags are registered on every `fleetpulse` start, and importing it there
# cost every command about 35 ms (python -X importtime).
if TYPE_CHECKING:
    from .flash import FlashJob, FlashResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    # --serial-port: --port is a TCP port in every other command
    p.add_argument("--serial-port", "--port", dest="serial_port", default=[],
                   action=config.renamed("--port", "append"), metavar="PORT|auto",
                   help="the board's serial port (repeatable; `auto`: the first USB board, "
                        "as mpremote picks it)")
    p.add_argument("--all", action="store_true",
                   help="every USB board attached, concurrently (ids from --id-template)")
    p.add_argument("--device-id", help="the device's id (one board)")
    p.add_argument("--id-template", metavar="TEMPLATE",
                   help="ids for several boards: {n} counts from --first in port order, "
                        "{serial} is the USB serial number, e.g. thermo-{n:04} or hub-{serial}")
    p.add_argument("--first", type=int, default=1, help="first {n} (default %(default)s)")
    p.add_argument("--site", type=Path, default=Path(config.env("SITE", "site.json") or ""),
                   help="site file: WiFi, broker, CA, model, attributes (env FLEETPULSE_SITE, "
                        "default %(default)s)")
    p.add_argument("--board", choices=["esp32", "rp2", "sim"], default=None,
                   help="expected board (default: what the board's runtime says it is)")
    p.add_argument("--runtime", type=Path, default=None, metavar="FILE",
                   help="write this MicroPython runtime first (.bin for ESP32 with esptool, "
                        ".uf2 for Pico W to its BOOTSEL drive)")
    p.add_argument("--rotate", action="store_true", help="new credentials even if the "
                   "board's still work, or to give a board an id that is registered")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the device's first report (default %(default)s)")
    p.add_argument("--json", action="store_true", help="results as JSON on stdout")
    config.add_broker_arg(p)
    config.add_auth_args(p, "fleetpulse-gateway")


def run_flash(args: argparse.Namespace) -> int:
    from .bundle import default_cache
    from .flash import FlashJob, flash_boards
    from .site import load_site

    site = load_site(args.site)
    ports = _ports(args)
    ids = _ids(args, ports)
    registry = Registry(args.registry)
    registry.init()
    broker = config.parse_broker(args.broker)
    auth = config.resolve_auth(args)
    jobs = [FlashJob(port=port, device_id=dev, site=site, registry=registry, broker=broker,
                     auth=auth, cache=default_cache(), board=args.board, runtime=args.runtime,
                     timeout=args.timeout, rotate=args.rotate)
            for (port, _), dev in zip(ports, ids, strict=True)]
    t0 = time.monotonic()
    err = Console(stderr=True, highlight=False)
    if err.is_terminal and not args.json:
        results = _with_table(jobs, err)
    else:
        def line(port: str, step: str, what: str) -> None:
            err.print(f"{port} {step}: {what}", markup=False)

        results = flash_boards(jobs, line)
    _report(results, args.json, err, time.monotonic() - t0)
    return 0 if all(r.ok for r in results) else 1


def _ports(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    from .board_link import attached_ports, resolve_port

    serials = dict(attached_ports())
    if args.all:
        if args.serial_port:
            raise UserError("give --all or --serial-port, not both")
        found = attached_ports()
        if not found:
            raise UserError("--all found no board on USB: plug them in (`mpremote connect "
                            "list` shows the ports)")
        return found
    ports = [resolve_port(p) for p in args.serial_port or ["auto"]]
    if len(set(ports)) != len(ports):
        raise UserError("the same port is given twice")
    return [(p, serials.get(p)) for p in ports]


def _ids(args: argparse.Namespace, ports: list[tuple[str, str | None]]) -> list[str]:
    if args.device_id and args.id_template:
        raise UserError("give --device-id or --id-template, not both")
    if args.device_id:
        if len(ports) > 1:
            raise UserError("--device-id names one board: use --id-template for several, "
                            "e.g. --id-template thermo-{n:04}")
        return [args.device_id]
    if not args.id_template:
        raise UserError("which device is this? pass --device-id ID, or --id-template "
                        "(e.g. thermo-{n:04} or hub-{serial})")
    names = {f[1] for f in string.Formatter().parse(args.id_template) if f[1] is not None}
    if names - {"n", "serial"}:
        raise UserError(f"--id-template knows {{n}} and {{serial}}, not "
                        f"{', '.join(sorted(names - {'n', 'serial'}))}")
    ids = []
    for i, (port, serial) in enumerate(ports):
        if "serial" in names and not serial:
            raise UserError(f"{port} has no USB serial number for {{serial}}: use {{n}} or "
                            "--device-id")
        try:
            ids.append(args.id_template.format(n=args.first + i, serial=serial))
        except (ValueError, IndexError) as e:
            raise UserError(f"--id-template {args.id_template!r}: {e}") from None
    if len(set(ids)) != len(ids):
        raise UserError(f"--id-template {args.id_template!r} gives two boards the same id")
    return ids


def _with_table(jobs: list[FlashJob], err: Console) -> list[FlashResult]:
    state = {j.port: (j.device_id, "waiting", "", time.monotonic()) for j in jobs}
    lock = threading.Lock()

    def progress(port: str, step: str, what: str) -> None:
        with lock:
            dev, _, _, started = state[port]
            state[port] = (dev, step, what, started)

    def table() -> Table:
        t = Table("port", "device", "step", "", "s")
        with lock:
            for port, (dev, step, what, started) in state.items():
                t.add_row(port, dev, step, what, f"{time.monotonic() - started:.0f}")
        return t

    from .flash import flash_boards

    box: list[list[FlashResult]] = []
    worker = threading.Thread(target=lambda: box.append(flash_boards(jobs, progress)),
                              daemon=True)
    with Live(table(), console=err, refresh_per_second=4, transient=True) as live:
        worker.start()
        while worker.is_alive():
            worker.join(0.25)
            live.update(table())
    return box[0]


def _report(results: list[FlashResult], as_json: bool, err: Console, took: float) -> None:
    if as_json:
        out = [r.as_json() for r in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=1))
    for r in results:
        if not as_json:
            mark = "ok" if r.ok else "FAILED"
            print(f"{mark} {r.port} {r.verdict} ({r.total_s:.1f} s)", flush=True)
        if not r.ok and r.console:
            err.print(f"last console lines of {r.port}:", markup=False)
            for line in r.console[-15:]:
                err.print(f"  {line}", markup=False)
    if len(results) > 1:
        failed = sum(not r.ok for r in results)
        err.print(f"{len(results)} boards: {len(results) - failed} ok, {failed} failed, "
                  f"in {took:.1f} s", markup=False)
    sys.stdout.flush()
