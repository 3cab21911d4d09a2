"""`fleetpulse devices add|list|set|import|export|revoke|rotate|...`: the device registry
from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from fleetpulse import config
from fleetpulse.output import add_format_arg, print_table

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
    a.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                   help="a device attribute, e.g. region=eu-west (repeatable)")
    a.set_defaults(func=_add)
    lst = dsub.add_parser("list", help="every device with its state")
    add_format_arg(lst)
    lst.set_defaults(func=_list)
    r = dsub.add_parser("revoke", help="cut a device off (its connection is closed at once)")
    r.add_argument("device_id")
    r.set_defaults(func=_revoke)
    ro = dsub.add_parser("rotate", help="new password for a device (print it once)")
    ro.add_argument("device_id")
    ro.set_defaults(func=_rotate)
    st = dsub.add_parser("set", help="change a device's attributes (history kept)",
                         description="Set attributes of a device as of now or --at; NAME= "
                                     "removes one. Metrics count a device where it was on "
                                     "each day, so a move is a change, not a rewrite.")
    st.add_argument("device_id")
    st.add_argument("pairs", nargs="+", metavar="NAME=VALUE")
    st.add_argument("--at", metavar="DATE|TIME", help="when the change took effect "
                    "(default now), e.g. 2026-03-01")
    st.set_defaults(func=_set)
    im = dsub.add_parser("import", help="set attributes of many devices from a CSV file",
                         description="attrs.csv: a device_id column and one column per "
                                     "attribute; an empty cell leaves the attribute as it "
                                     "is, '-' removes it.")
    im.add_argument("csv", type=Path, metavar="ATTRS.CSV")
    im.add_argument("--at", metavar="DATE|TIME", help="when the changes took effect "
                    "(default now)")
    im.set_defaults(func=_import)
    ex = dsub.add_parser("export", help="copy device attributes into the dataset",
                         description="Write every device's attributes with their history "
                                     "into the dataset (_registry/device_attributes.parquet), "
                                     "where metrics (--by attr:NAME) and explain read them.")
    config.add_data_arg(ex)
    ex.set_defaults(func=_export)
    cl = dsub.add_parser("claim", help="claims: one credential for a batch of identical boards",
                         description="A claim lets up to --count boards carrying the same "
                                     "image ask `fleetpulse gateway provision` for accounts "
                                     "of their own (docs/provisioning.md).")
    csub = cl.add_subparsers(dest="claim_action", metavar="ACTION", required=True)
    cc = csub.add_parser("create", help="a new claim; prints its id and secret once")
    cc.add_argument("--model", help="hardware model of the batch (also the id prefix)")
    cc.add_argument("--count", type=int, required=True, help="how many devices it may create")
    cc.add_argument("--prefix", help="device ids are PREFIX-SERIAL (default: the model)")
    cc.add_argument("--allow", type=Path, metavar="FILE",
                    help="only these serial numbers (one per line)")
    cc.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                    help="an attribute for every device it creates (repeatable)")
    cc.set_defaults(func=_claim_create)
    cls = csub.add_parser("list", help="every claim with its use")
    add_format_arg(cls)
    cls.set_defaults(func=_claim_list)
    cr = csub.add_parser("revoke", help="stop a claim creating devices (theirs stay)")
    cr.add_argument("claim_id")
    cr.set_defaults(func=_claim_revoke)
    for q in (a, lst, r, ro, st, im, ex, cc, cls, cr):
        config.add_registry_arg(q)
    c = dsub.add_parser("configure", help="send a device its settings (retained config topic)",
                        description="Publish settings to devices/ID/config, retained, so the "
                                    "device applies them at once or when it next connects, "
                                    "and reports each change as a setting_changed event.")
    c.add_argument("device_id")
    c.add_argument("settings", nargs="?", default=None,
                   help='JSON object, e.g. \'{"sample_s": 30, "experiments": {"eco_nudge": 0.5}}\'')
    c.add_argument("--clear", action="store_true", help="remove the retained settings")
    config.add_broker_arg(c)
    config.add_auth_args(c, "fleetpulse-gateway")
    c.set_defaults(func=_configure)


def _show_secret(console: Console, device_id: str, password: str, reloaded: bool) -> None:
    console.print(f"device [bold]{device_id}[/]\n  username: {device_id}\n  password: {password}"
                  "\n(shown once: put it into the device's config.json now)")
    if not reloaded:
        console.print("no running broker found for this registry: it takes effect when "
                      "`fleetpulse broker` starts")


def _add(args: argparse.Namespace) -> int:
    reg = Registry(args.registry)  # add() creates the registry once the id is valid
    creds = reg.add(args.device_id, args.model, config.parse_attributes(args.attr))
    _show_secret(Console(), creds.username, creds.password, reg.pid_path.exists())
    return 0


def _set(args: argparse.Namespace) -> int:
    changes: dict[str, str | None] = dict(config.parse_attributes(args.pairs))
    n = _existing(args.registry).set_attributes({args.device_id: changes}, args.at)
    Console(stderr=True).print(f"{args.device_id}: " + ("attributes changed" if n else
                                                         "no change"))
    return 0


def _import(args: argparse.Namespace) -> int:
    from .attributes import read_csv

    changes = read_csv(args.csv)
    n = _existing(args.registry).set_attributes(changes, args.at)
    Console(stderr=True).print(f"{args.csv}: {len(changes)} devices, {n} changed")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fleetpulse.ingest.store import Store

    from .attributes import ATTRIBUTES_FILE, intervals

    table = intervals(_existing(args.registry).devices())
    where = Store(args.data).write_table(ATTRIBUTES_FILE, table)
    Console(stderr=True).print(f"{table.num_rows} attribute intervals of "
                               f"{len(set(table.column('device_id').to_pylist()))} devices "
                               f"-> {where}")
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


def _configure(args: argparse.Namespace) -> int:
    import json

    import paho.mqtt.client as mqtt

    from fleetpulse.errors import UserError, warn
    from fleetpulse.firmware import check_settings, setting_names
    from fleetpulse.mqtt import unreachable_broker

    if args.clear == (args.settings is not None):
        raise UserError("give either a settings JSON object or --clear")
    payload = b""
    if not args.clear:
        try:
            settings = json.loads(args.settings)
        except ValueError as e:
            raise UserError(f"settings are not JSON ({e}): quote them, e.g. "
                            """'{"sample_s": 30}'""") from None
        if not isinstance(settings, dict):
            raise UserError("settings must be a JSON object")
        unknown = sorted(set(settings) - setting_names())
        if unknown:
            raise UserError(f"unknown setting {', '.join(unknown)}: the firmware knows "
                            f"{', '.join(sorted(setting_names()))}")
        problem = check_settings(settings)
        if problem:
            # the device would refuse the whole message and keep its settings
            raise UserError(f"the firmware would refuse these settings: {problem}")
        payload = json.dumps(settings).encode()
    reg = Registry(args.registry)
    if reg.exists:
        # a retained message for a device that cannot connect waits on the broker for ever
        reg.require_active(args.device_id)
    else:
        warn(f"no device registry at {args.registry}: {args.device_id} is not checked "
             "(pass --registry DIR)")
    host, port = config.parse_broker(args.broker)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set(*config.resolve_auth(args))
    try:
        client.connect(host, port)
    except OSError as e:
        raise unreachable_broker(args.broker, e) from None
    client.loop_start()
    try:
        info = client.publish(f"devices/{args.device_id}/config", payload, qos=1, retain=True)
        info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    Console().print(f"{'cleared' if args.clear else 'sent'} settings of {args.device_id}")
    return 0


def _existing(registry: Path) -> Registry:
    """A registry that a listing reads: never created by it."""
    from fleetpulse.errors import UserError

    reg = Registry(registry)
    if not reg.exists:
        raise UserError(f"no device registry at {registry}: pass --registry DIR (`fleetpulse "
                        f"broker` keeps one in {config.DEFAULT_REGISTRY})")
    return reg


def _list(args: argparse.Namespace) -> int:
    reg = _existing(args.registry)
    columns = ("device", "model", "attributes", "state", "added", "last seen")
    rows = []
    for device_id, d in sorted(reg.devices().items()):
        state = "revoked" if d.get("revoked_at") else "active"
        attrs = " ".join(f"{k}={v}" for k, v in sorted((d.get("attributes") or {}).items()))
        rows.append((device_id, d.get("model") or "", attrs, state, d.get("added_at") or "",
                     d.get("last_seen") or ""))
    print_table(columns, rows, args.format)
    return 0


def _claim_create(args: argparse.Namespace) -> int:
    from fleetpulse.errors import UserError

    allow = None
    if args.allow is not None:
        try:
            allow = [ln.strip() for ln in args.allow.read_text().splitlines() if ln.strip()]
        except OSError as e:
            raise UserError(f"cannot read --allow {args.allow}: {e.strerror}") from None
    reg = Registry(args.registry)
    creds = reg.create_claim(args.model, args.count, allow, args.prefix,
                             config.parse_attributes(args.attr))
    Console().print(f"claim [bold]{creds.username}[/] for {args.count} devices\n"
                    f"  id: {creds.username}\n  secret: {creds.password}\n"
                    "(shown once: put both into the batch's config.json as "
                    '"claim": {"id": ..., "secret": ...})')
    return 0


def _claim_list(args: argparse.Namespace) -> int:
    reg = _existing(args.registry)
    columns = ("claim", "model", "devices", "allow-list", "state", "created")
    rows = []
    for claim_id, c in sorted(reg.claims().items()):
        allow = "" if c.get("allow") is None else f"{len(c['allow'])} serials"
        rows.append((claim_id, c.get("model") or "", f"{len(c['devices'])} of {c['count']}",
                     allow, "revoked" if c.get("revoked_at") else "active",
                     c.get("created_at") or ""))
    print_table(columns, rows, args.format)
    return 0


def _claim_revoke(args: argparse.Namespace) -> int:
    Registry(args.registry).revoke_claim(args.claim_id)
    Console().print(f"revoked claim {args.claim_id}: it provisions no more devices; those "
                    "it provisioned keep their accounts")
    return 0
