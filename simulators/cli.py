"""`fleetpulse simulate` and `fleetpulse demo`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from fleetpulse import config
from fleetpulse.errors import UserError
from fleetpulse.output import add_format_arg

from .fleet import DEFAULT_START

if TYPE_CHECKING:
    from .faults import Scenario


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="publish a deterministic virtual fleet over MQTT",
                       description="Publish contract-v1 telemetry of a virtual fleet at QoS 1 "
                                   "in accelerated time and write the ground truth. With "
                                   "--live, every device is its own MQTT connection living "
                                   "in (sped-up) real time.")
    config.add_broker_arg(p)
    _fleet_args(p, days_default=None)
    p.add_argument("--start", type=config.day, default=None,
                   help=f"first simulated UTC day (default {DEFAULT_START}; not with --live)")
    p.add_argument("--truth", type=Path, default=None, help="write the ground truth JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="processes generating and publishing the fleet, each over its own "
                        "connection; the messages are the same (default 2, 1 on one core); "
                        "with --live, processes holding the devices (default 1)")
    p.add_argument("--rate", type=_positive_rate, default=None, metavar="MSG_PER_S",
                   help="publish at most this many messages a second, all workers together "
                        "(default: as fast as the broker acknowledges)")
    p.add_argument("--scenario", type=Path, default=None, metavar="FILE",
                   help="faults to plant, a TOML file (simulators/faults.py says which); "
                        "the truth file's planted.faults counts them")
    live = p.add_argument_group("live mode")
    live.add_argument("--live", action="store_true",
                      help="each device its own connection, own credentials, last will, "
                           "config topic, journal and reconnects, as the firmware")
    live.add_argument("--speed", type=_above_zero("a speed-up"), default=1.0, metavar="X",
                      help="devices' time runs X times as fast as real time (default 1)")
    live.add_argument("--duration", type=_above_zero("a number of seconds"), default=None,
                      metavar="SECONDS",
                      help="live this long, then send what is journaled and stop "
                           "(default: until Ctrl-C)")
    live.add_argument("--provision", action="store_true",
                      help="create the devices sim-00000... in --registry (devices there "
                           "already get new passwords): live devices need their own")
    config.add_auth_args(p, "fleetpulse-simulator")
    p.set_defaults(func=_simulate)


def register_capture(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record what a broker carries into a capture",
                       description="Subscribe and write every message losslessly (payload "
                                   "bytes, QoS, retain, MQTT 5 properties, receive times) "
                                   "into a capture directory of Parquet segments "
                                   "(docs/capture-format.md).")
    config.add_broker_arg(p)
    p.add_argument("--out", type=Path, required=True, help="capture directory to create")
    p.add_argument("--filter", default="devices/#",
                   help="topic filter to record (default %(default)s)")
    p.add_argument("--count", type=_positive, help="stop after this many messages")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--from", dest="source", type=Path, metavar="FILE",
                   help="no broker: make the capture from mosquitto_sub -F '%%j' output or "
                        "mqtt-recorder CSV")
    p.add_argument("--base64", action="store_true",
                   help="with --from: the CSV's payloads are base64 (mqtt-recorder "
                        "--encode_b64)")
    config.add_auth_args(p, "fleetpulse-recorder")
    p.set_defaults(func=_record)

    p = sub.add_parser("replay", help="replay a capture into a dataset, or check its metrics",
                       description="Feed a capture through ingest's pipeline into --data, "
                                   "or with --golden compare every metric with approved "
                                   "values (exit 1 and a table of what changed).")
    p.add_argument("capture", type=Path, help="capture directory (from `fleetpulse record`)")
    p.add_argument("--broker", metavar="HOST:PORT", default=config.env("BROKER"),
                   help="publish to this broker, on the capture's schedule (env "
                        "FLEETPULSE_BROKER)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="with --broker: this many times faster than recorded (default 1)")
    p.add_argument("--fast", action="store_true",
                   help="with --broker: as fast as the broker takes them, no schedule")
    p.add_argument("--loop", type=_positive, default=1, metavar="N",
                   help="with --broker: replay the capture N times (default 1)")
    p.add_argument("--data", type=Path, help="dataset to replay into, offline (no broker)")
    p.add_argument("--golden", type=Path, metavar="FILE",
                   help="compare the replayed metrics with FILE")
    p.add_argument("--update-golden", action="store_true",
                   help="with --golden: write FILE from this capture instead")
    add_format_arg(p, "with --golden: the differences ")
    p.add_argument("--filter", default=None, help="replay only topics matching this filter")
    p.add_argument("--retime", default="none", metavar="now|DATE|none",
                   help="shift every envelope's sent_ms and record times by one constant so "
                        "the first record lands now or at DATE's UTC midnight (default none)")
    p.add_argument("--clone", type=_positive, default=1, metavar="K",
                   help="replay as K fleets: device ids get -c1 .. -c(K-1) in topic and "
                        "envelope (default 1)")
    config.add_auth_args(p, "fleetpulse-simulator")
    p.set_defaults(func=_replay)


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="broker + ingest + simulated fleet + metrics, in one go",
                       description="Start mosquitto and ingest, simulate a fleet, print the "
                                   "metrics, stop everything.")
    _fleet_args(p)
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep broker data, dataset and truth here (default: a temporary "
                        "directory, removed at the end)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.devices, args.days, args.seed, args.workdir)


def _above_zero(what: str) -> Callable[[str], float]:
    """An argparse type: a number above 0, the error naming what it counts."""
    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            x = 0.0
        if not x > 0:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{value!r}: {what} above 0")
        return x
    return parse


_positive_rate = _above_zero("a number of messages a second")


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return n


DEFAULT_DAYS = 30


def _fleet_args(p: argparse.ArgumentParser, days_default: int | None = DEFAULT_DAYS) -> None:
    p.add_argument("--devices", type=_positive, default=200,
                   help="fleet size (default %(default)s)")
    p.add_argument("--days", type=_positive, default=days_default,
                   help=f"days to simulate (default {DEFAULT_DAYS}"
                        + ("; not with --live)" if days_default is None else ")"))
    p.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")


def _simulate(args: argparse.Namespace) -> int:
    if args.live:
        return _live(args)
    from .simulate import DEFAULT_WORKERS, simulate

    for flag, value in (("--speed", args.speed != 1.0), ("--duration", args.duration),
                        ("--provision", args.provision)):
        if value:
            raise UserError(f"{flag} is for --live: a bulk simulation runs in virtual time "
                            "as fast as the broker takes it")
    host, port = config.parse_broker(args.broker)
    username, password = config.resolve_auth(args)
    began = time.monotonic()
    truth = simulate(host, port, args.devices, args.days or DEFAULT_DAYS, args.seed,
                     args.truth, args.start or DEFAULT_START, progress=not args.no_progress,
                     username=username, password=password,
                     workers=args.workers or DEFAULT_WORKERS,
                     rate=args.rate, scenario=_scenario(args))
    secs = time.monotonic() - began
    Console().print(
        f"published {truth['messages']:,} messages, {truth['records']:,} records, every one "
        f"acknowledged, in {secs:.1f} s ({truth['messages'] / secs:,.0f} msg/s)"
        # the faults' extra messages are not among those counted: the truth counts them
        + ("; faults planted beside them" if "faults" in truth["planted"] else "")
        + (f"; truth in {args.truth}" if args.truth else ""),
        soft_wrap=True,  # one line for scripts, whatever the width
    )
    return 0


def _scenario(args: argparse.Namespace) -> Scenario | None:
    from .faults import Scenario

    return Scenario.load(args.scenario) if args.scenario else None


def _live(args: argparse.Namespace) -> int:
    from fleetpulse.gateway.registry import Registry

    from .live import live

    for flag, value in (("--days", args.days), ("--start", args.start),
                        ("--rate", args.rate)):
        if value is not None:
            raise UserError(f"{flag} is for a bulk simulation: live devices run in real time "
                            "(--speed, --duration), each with its own account")
    if not args.provision:
        raise UserError("live devices connect with accounts of their own, whose passwords "
                        "only provisioning hands out: add --provision (it creates "
                        "sim-00000... in --registry)")
    host, port = config.parse_broker(args.broker)
    began = time.monotonic()
    truth = live(host, port, args.devices, args.seed, Registry(args.registry),
                 speed=args.speed, duration=args.duration, truth_path=args.truth,
                 progress=not args.no_progress, scenario=_scenario(args),
                 workers=args.workers or 1)
    Console().print(
        f"live: {args.devices:,} devices sent {truth['messages']:,} messages, "
        f"{truth['records']:,} records, every one acknowledged, in "
        f"{time.monotonic() - began:.1f} s" + (f"; truth in {args.truth}" if args.truth else ""),
        soft_wrap=True)
    return 0


def _record(args: argparse.Namespace) -> int:
    from .record import record

    if args.source is not None:
        from .capture_import import import_file

        got = import_file(args.source, args.out, args.base64)
        lost = (f"; {got.skipped:,} left out: {args.source} kept no bytes of their payloads "
                "(mosquitto_sub -F %j prints binary payloads as \"\")" if got.skipped else "")
        Console(stderr=True).print(f"imported {got.messages:,} messages from {got.source} "
                                   f"into {args.out}{lost}")
        return 0

    host, port = config.parse_broker(args.broker)
    username, password = config.resolve_auth(args)
    r = record(host, port, args.out, args.filter, args.count, args.duration, username,
               password)
    Console(stderr=True).print(f"recorded {r.messages:,} messages "
                               f"({r.payload_bytes / 1e6:.1f} MB) in {r.seconds:.1f} s "
                               f"into {args.out}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from fleetpulse.errors import UserError

    from .replay import REL_TOL, golden, replay_broker, replay_offline

    if args.golden:
        changes = golden(args.capture, args.golden, args.update_golden, args.filter)
        if args.update_golden:
            Console(stderr=True).print(f"wrote {args.golden}")
            return 0
        from fleetpulse.output import print_table

        if not changes:
            Console(stderr=args.format != "table").print(
                f"metrics equal {args.golden} (floats within {REL_TOL:g})")
            if args.format != "table":
                print_table(["metric", "key", "expected", "got"], [], args.format)
            return 0
        print_table(["metric", "key", "expected", "got"],
                    [(c.metric, c.key, c.expected, c.got) for c in changes], args.format,
                    title=f"{len(changes)} differences from {args.golden}")
        return 1
    if args.broker and args.data is None:
        host, port = config.parse_broker(args.broker)
        username, password = config.resolve_auth(args)
        b = replay_broker(args.capture, host, port, args.speed, args.fast, args.filter,
                          args.loop, username, password, retime=args.retime,
                          clones=args.clone)
        timing = ("" if args.fast else f", lag p50 {b.lag_p50_ms:.1f} ms, p99 "
                  f"{b.lag_p99_ms:.1f} ms, max {b.lag_max_ms:.1f} ms")
        Console().print(f"replayed {b.messages:,} messages in {b.seconds:.2f} s "
                        f"({b.rate:,.0f} msg/s){timing}; every QoS 1 message acknowledged"
                        + _shifted(b.offset_ms))
        return 0
    if args.data is None:
        raise UserError("replay needs --broker HOST:PORT, --data DIR (offline into a "
                        "dataset) or --golden FILE")
    r = replay_offline(args.capture, args.data, args.filter, args.retime, args.clone)
    Console(stderr=True).print(f"replayed {r.messages:,} messages: {r.records:,} records "
                               f"stored, {r.rejected:,} rejected into quarantine, in {args.data}"
                               + _shifted(r.offset_ms))
    return 0


def _shifted(offset_ms: int) -> str:
    return f"; times shifted by {offset_ms:+,} ms (--retime)" if offset_ms else ""
