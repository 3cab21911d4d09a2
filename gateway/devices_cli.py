"""`fleetpulse devices add|list|revoke|rotate`: the device registry from the command line."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from . import config
from .registry import Registry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="add, list, revoke and rotate device credentials",
                       description="Manage who may connect to the broker. Changes reach a "
                                   "running broker at once (SIGHUP), without dropping other "
                                   "devices' connections.")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = dsub.add_parser("add", help="register a device and print its password once")
    a.add_argument("device_id")
    a.add_argument("--model", help="hardware model, e.g. thermostat-esp32")
    a.set_defaults(func=_add)
    lst = dsub.add_parser("list", help="every device with its state")
    lst.set_defaults(func=_list)
    r = dsub.add_parser("revoke", help="cut a device off (its connection is closed at once)")
    r.add_argument("device_id")
    r.set_defaults(func=_revoke)
    ro = dsub.add_parser("rotate", help="new password for a device (print it once)")
    ro.add_argument("device_id")
    ro.set_defaults(func=_rotate)
    for q in (a, lst, r, ro):
        config.add_registry_arg(q)


def _show_secret(console: Console, device_id: str, password: str, reloaded: bool) -> None:
    console.print(f"device [bold]{device_id}[/]\n  username: {device_id}\n  password: {password}"
                  "\n(shown once: put it into the device's config.json now)")
    if not reloaded:
        console.print("no running broker found for this registry: it takes effect when "
                      "`fleetpulse broker` starts")


def _add(args: argparse.Namespace) -> int:
    reg = Registry(args.registry).init()
    creds = reg.add(args.device_id, args.model)
    _show_secret(Console(), creds.username, creds.password, reg.pid_path.exists())
    return 0


def _rotate(args: argparse.Namespace) -> int:
    reg = Registry(args.registry).init()
    creds = reg.rotate(args.device_id)
    _show_secret(Console(), creds.username, creds.password, reg.pid_path.exists())
    return 0


def _revoke(args: argparse.Namespace) -> int:
    reg = Registry(args.registry).init()
    reg.revoke(args.device_id)
    Console().print(f"revoked {args.device_id}"
                    + ("; the broker closed its connection" if reg.pid_path.exists() else ""))
    return 0


def _list(args: argparse.Namespace) -> int:
    reg = Registry(args.registry).init()
    table = Table("device", "model", "state", "added", "last seen")
    for device_id, d in sorted(reg.devices().items()):
        state = "revoked" if d.get("revoked_at") else "active"
        table.add_row(device_id, d.get("model") or "", state, d.get("added_at") or "",
                      d.get("last_seen") or "")
    Console().print(table)
    return 0
