"""`fleetpulse rollout start|status|pause|resume|abort|run`: staged firmware rollouts
(gateway/rollout.py) from the command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from fleetpulse import config
from fleetpulse.errors import UserError
from fleetpulse.output import add_format_arg, print_table

from .ota_chunks import Release
from .registry import Registry
from .rollout import (
    Plan,
    Rollout,
    RolloutStore,
    change_state,
    parse_duration,
    parse_stages,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="staged firmware rollouts that halt on a clear loss",
                       description="Send a release to a growing share of the fleet; a guard "
                                   "compares updated devices with the rest after every look "
                                   "and halts the rollout on a clear loss (docs/ota.md).")
    rsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = rsub.add_parser("start", help="plan a rollout (`rollout run` carries it out)")
    s.add_argument("--release", type=Path, required=True, metavar="DIR",
                   help="a `fleetpulse firmware build` output (its manifest.json)")
    s.add_argument("--version", help="the release's version (default: the manifest's)")
    s.add_argument("--previous", metavar="VERSION",
                   help="what the devices run now, the control and what a rollback sends "
                        "back (default: the version most devices in scope last reported)")
    s.add_argument("--stages", default="1%,5%,25%,50%,100%",
                   help="shares of the scope, growing (default %(default)s)")
    s.add_argument("--soak", default="6h", help="time each stage runs before the next "
                                                "(default %(default)s)")
    s.add_argument("--guard", default="crash_free,reboots,connectivity",
                   help="what the updated devices must not be clearly worse at (default "
                        "%(default)s)")
    s.add_argument("--model", help="only devices of this model")
    s.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                   help="only devices with this attribute (repeatable)")
    s.add_argument("--auto-rollback", action="store_true",
                   help="on a halt, send the previous version back to the updated devices")
    config.add_data_arg(s)
    config.add_registry_arg(s)
    s.set_defaults(func=_start)

    st = rsub.add_parser("status", help="each rollout's stage, devices and guard verdict")
    st.add_argument("version", nargs="?", help="one rollout (default: every rollout)")
    config.add_data_arg(st)
    config.add_registry_arg(st)
    add_format_arg(st)
    st.set_defaults(func=_status)

    for action, text in (("pause", "stop sending and judging until resumed"),
                         ("resume", "carry on a paused rollout (its stage soaks afresh)"),
                         ("abort", "end a rollout; with --rollback send the previous "
                                   "version back")):
        a = rsub.add_parser(action, help=text)
        a.add_argument("version")
        if action == "abort":
            a.add_argument("--rollback", action="store_true",
                           help="send the previous version back to the updated devices")
            config.add_broker_arg(a)
            config.add_auth_args(a, "fleetpulse-gateway")
        else:
            config.add_registry_arg(a)
        a.set_defaults(func=_change, change=action)

    r = rsub.add_parser("run", help="the service: look at running rollouts every --every",
                        description="Send each stage's updates, judge the guard on the "
                                    "dataset, move on or halt. State is saved after every "
                                    "look: a restart carries on where it stopped.")
    r.add_argument("--every", default="1h", help="time between looks (default %(default)s)")
    r.add_argument("--once", action="store_true", help="look once and exit")
    config.add_broker_arg(r)
    config.add_data_arg(r)
    config.add_auth_args(r, "fleetpulse-gateway")
    r.set_defaults(func=_run)


def _store(registry: Path) -> RolloutStore:
    return RolloutStore(registry / "rollouts")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _start(args: argparse.Namespace) -> int:
    from fleetpulse.analytics.rollout_guard import GUARDS

    from .rollout_service import running_version, scope_of

    release = Release(args.release).manifest
    manifest_path = args.release / "manifest.json"
    built = release.get("firmware_version")
    version = args.version or built
    if not version:
        raise UserError(f"{manifest_path} names no firmware_version: pass --version")
    if built and version != built:
        raise UserError(f"--version {version} but {manifest_path} was built as {built}")
    stages, soak_s = parse_stages(args.stages), parse_duration(args.soak)
    config.require_dataset(args.data)
    registry = Registry(args.registry)
    if not registry.exists:
        raise UserError(f"no device registry at {args.registry}: pass --registry DIR")
    plan = Plan(version=version, previous=args.previous or "", release=release,
                stages=stages, soak_s=soak_s,
                guards=[g.strip() for g in args.guard.split(",") if g.strip()] or list(GUARDS),
                model=args.model, attrs=config.parse_attributes(args.attr),
                auto_rollback=args.auto_rollback, release_dir=str(args.release.resolve()))
    scope = scope_of(registry, plan)
    if not scope:
        raise UserError("no registered device matches --model/--attr: nothing to roll out to")
    if not plan.previous:
        found = running_version(args.data, scope)
        if found is None:
            raise UserError("no device in scope has reported yet: pass --previous VERSION")
        plan.previous = found
    r = _store(args.registry).start(plan, _now_ms())
    Console(stderr=True).print(
        f"rollout of {version} over {len(scope)} devices on {plan.previous}: stages "
        f"{', '.join(f'{x * 100:g}%' for x in plan.stages)}, soak {args.soak}; "
        "`fleetpulse rollout run` sends and judges")
    print(r.plan.version)
    return 0


def _status(args: argparse.Namespace) -> int:
    store = _store(args.registry)
    rollouts = [store.load(args.version)] if args.version else store.all()
    reported = _reported(args.data) if rollouts else None
    if args.format == "json":
        json.dump([_status_dict(r, reported) for r in rollouts], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if not rollouts:
        Console(stderr=True).print("no rollouts: `fleetpulse rollout start` begins one")
        return 0
    cols = ["version", "previous", "state", "stage", "share", "since", "sent", "applied",
            "confirmed", "rolled_back", "verdict"]
    rows = [[d[c] for c in cols] for d in (_status_dict(r, reported) for r in rollouts)]
    print_table(cols, rows, args.format)
    if args.format == "table":
        for r in rollouts:
            guards = (r.verdict or {}).get("guards", [])
            if guards:
                gcols = ["guard", "control", "updated", "low", "high", "n_control",
                         "n_updated", "loss"]
                print_table(gcols, [[g[c] for c in gcols] for g in guards], "table",
                            title=f"guard of {r.plan.version}")
            print_table(["at", "what"], [[_utc(h["ms"]), h["what"]] for h in r.history],
                        "table", title=f"history of {r.plan.version}")
    return 0


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _reported(data: str) -> dict[str, dict[str, int]] | None:
    """What the devices reported per version (rollout_progress), or nothing, said once
    on stderr, when there is no dataset to read it from."""
    from fleetpulse.analytics.dataset import connect, query
    from fleetpulse.analytics.rollout_guard import rows_of

    try:
        config.require_dataset(data)
    except UserError as e:
        Console(stderr=True).print(f"applied, confirmed and rolled back as the devices report "
                                   f"them are left out: {e}")
        return None
    con = connect(data)
    try:
        rows = rows_of(query(con, "SELECT * FROM rollout_progress()"))
    finally:
        con.close()
    return {row["version"]: row for row in rows}


def _status_dict(r: Rollout, reported: dict[str, dict[str, int]] | None
                 ) -> dict[str, object]:
    """A rollout's state; `applied`, `confirmed` and `rolled_back` are what the devices
    reported (None without a dataset), `sent` and `sent_back` what the server sent."""
    got = {} if reported is None else reported.get(r.plan.version, {})
    return {"version": r.plan.version, "previous": r.plan.previous, "state": r.state,
            "stage": f"{r.stage + 1}/{len(r.plan.stages)}",
            "share": f"{r.plan.stages[r.stage] * 100:g}%",
            "since": _utc(r.stage_started_ms),
            "sent": len(r.sent), "sent_back": len(r.rolled_back),
            "applied": None if reported is None else got.get("applied", 0),
            "confirmed": None if reported is None else got.get("confirmed", 0),
            "rolled_back": None if reported is None else got.get("rolled_back", 0),
            "verdict": (r.verdict or {}).get("summary", "not looked at yet"),
            "looks": r.looks, "history": r.history}


def _change(args: argparse.Namespace) -> int:
    store = _store(args.registry)
    r = store.load(args.version)
    sender = None
    if args.change == "abort" and args.rollback:
        from .rollout_service import MqttSender

        host, port = config.parse_broker(args.broker)
        sender = MqttSender(host, port, *config.resolve_auth(args))
    try:
        change_state(r, args.change, _now_ms(), sender)
        if sender is not None:
            sender.wait()
    finally:
        if sender is not None:
            sender.close()
    store.save(r)
    Console(stderr=True).print(f"rollout of {r.plan.version}: {r.history[-1]['what']}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .rollout_service import MqttSender, Serving, look

    every = parse_duration(args.every)
    if every < 1 and not args.once:
        raise UserError(f"--every {args.every}: at least 1s between looks (or --once)")
    config.require_dataset(args.data)
    registry = Registry(args.registry)
    store = _store(args.registry)
    host, port = config.parse_broker(args.broker)
    sender = MqttSender(host, port, *config.resolve_auth(args))
    serving = Serving()
    serving.update(store.active())
    sender.serve(serving)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while True:
            looked = look(store, registry, args.data, sender)
            serving.update(store.active())
            for r in looked:
                Console(stderr=True).print(
                    f"rollout {r.plan.version}: {r.state}, stage {r.stage + 1}/"
                    f"{len(r.plan.stages)}, {len(r.sent)} sent; "
                    f"{(r.verdict or {}).get('summary', '')}")
            if args.once or stop.wait(every):
                return 0
    finally:
        sender.close()

