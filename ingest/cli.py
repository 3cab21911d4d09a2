"""`fleetpulse ingest` and `fleetpulse compact`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
from pathlib import Path

from fleetpulse import config
from fleetpulse.output import add_format_arg


def _int_env(name: str, default: int) -> int:
    return int(config.env(name, str(default)) or default)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="MQTT telemetry -> validated rows -> Parquet",
        description="Subscribe to devices/+/telemetry at QoS 1, make every message durable "
                    "in a write-ahead log before acknowledging it, and write Parquet "
                    "partitioned by UTC date. SIGINT/SIGTERM flush and exit.")
    config.add_broker_arg(p)
    config.add_data_arg(p)
    p.add_argument("--state-dir", type=Path, default=config.env("STATE_DIR"),
                   help="local directory for the write-ahead log and counters (env "
                        "FLEETPULSE_STATE_DIR; default: the data directory, or "
                        "./fleetpulse-state when --data is s3://)")
    p.add_argument("--client-id", default=config.env("INGEST_CLIENT_ID", "fleetpulse-ingest"),
                   help="MQTT client id of the persistent session; also names this process's "
                        "files and log (env FLEETPULSE_INGEST_CLIENT_ID, default %(default)s)")
    p.add_argument("--flush-rows", type=int, default=_int_env("FLUSH_ROWS", 50_000),
                   help="flush when this many rows are buffered (env FLEETPULSE_FLUSH_ROWS, "
                        "default %(default)s)")
    p.add_argument("--flush-seconds", type=float,
                   default=float(config.env("FLUSH_SECONDS", "5") or 5),
                   help="flush when the oldest buffered row is this old (env "
                        "FLEETPULSE_FLUSH_SECONDS, default %(default)s)")
    p.add_argument("--flush-idle", type=float,
                   default=float(config.env("FLUSH_IDLE", "0.05") or 0),
                   help="flush once no message came for this long, when at least 1000 rows "
                        "are buffered: the end of a burst reaches Parquet at once (env "
                        "FLEETPULSE_FLUSH_IDLE, default %(default)s; 0 turns it off)")
    p.add_argument("--session-expiry", type=int, default=_int_env("SESSION_EXPIRY", 7 * 86400),
                   help="seconds the broker keeps messages for a stopped ingest (env "
                        "FLEETPULSE_SESSION_EXPIRY, default %(default)s)")
    p.add_argument("--workers", type=int, default=_int_env("INGEST_WORKERS", 1),
                   help="processes sharing the load through an MQTT 5 shared subscription "
                        "(env FLEETPULSE_INGEST_WORKERS, default %(default)s)")
    p.add_argument("--shared-group", default=config.env("SHARED_GROUP"),
                   help="join the shared subscription $share/GROUP/devices/+/telemetry, to "
                        "split the load with other ingest processes (env "
                        "FLEETPULSE_SHARED_GROUP)")
    p.add_argument("--metrics-port", type=config.tcp_port,
                   default=int(config.env("METRICS_PORT", "0") or 0) or None,
                   help="serve Prometheus /metrics on 127.0.0.1:PORT (env "
                        "FLEETPULSE_METRICS_PORT; off by default)")
    config.add_auth_args(p, "fleetpulse-ingest")
    p.set_defaults(func=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    # A stop request that comes while ingest is still starting (importing, replaying its
    # log) is kept and honoured once the service runs, instead of killing the process.
    early_stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: early_stop.set())
    from .service import IngestConfig, run
    from .stats import Stats, publish

    host, port = config.parse_broker(args.broker)
    args.username, args.password = config.resolve_auth(args)
    if args.workers > 1:
        return _run_workers(args)
    from .store import is_remote

    state_dir = args.state_dir
    if state_dir is None and is_remote(args.data):
        state_dir = Path("fleetpulse-state")
    with contextlib.suppress(OSError):
        publish(Stats(client_id=args.client_id), state_dir or Path(args.data))
    cfg = IngestConfig(
        host=host, port=port, data=args.data, state_dir=state_dir, client_id=args.client_id,
        flush_rows=args.flush_rows, flush_seconds=args.flush_seconds,
        flush_idle_s=args.flush_idle, session_expiry_s=args.session_expiry,
        shared_group=args.shared_group,
        username=args.username, password=args.password, metrics_port=args.metrics_port,
    )
    # glibc's allocator for Arrow's buffers: mimalloc, pyarrow's default, kept freed
    # pages, and ingest's peak RSS was 215 MB against 145 MB taking the same stream at
    # the same rate (bench/RESULTS.md, issue 17's "Second pass").
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    return asyncio.run(run(cfg, early_stop=early_stop))


def _run_workers(args: argparse.Namespace) -> int:
    """Start N single-worker processes in one shared-subscription group and supervise them:
    signals are passed on, and the exit code is the worst of theirs."""
    group = args.shared_group or args.client_id
    procs = []
    for i in range(args.workers):
        cmd = [sys.executable, "-m", "fleetpulse"]
        cmd += ["-v"] * args.verbose
        cmd += ["ingest", "--broker", args.broker, "--data", str(args.data),
                "--client-id", f"{args.client_id}-{i}", "--shared-group", group,
                "--flush-rows", str(args.flush_rows), "--flush-seconds", str(args.flush_seconds),
                "--flush-idle", str(args.flush_idle),
                "--session-expiry", str(args.session_expiry)]
        if args.state_dir:
            cmd += ["--state-dir", str(args.state_dir)]
        if args.metrics_port:
            cmd += ["--metrics-port", str(args.metrics_port + i)]
        if args.username:
            cmd += ["--username", args.username]
        procs.append(subprocess.Popen(cmd, env=_env_with_password(args.password)))

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(p.wait() for p in procs)


def _env_with_password(password: str | None) -> dict[str, str] | None:
    if not password:
        return None
    import os

    # The password travels in the environment, not on a command line others can read.
    return {**os.environ, "FLEETPULSE_MQTT_PASSWORD": password}


def register_compact(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compact", help="merge each partition's small Parquet files into one, write rollups",
        description="Merge the files of every date partition into one file with large row "
                    "groups, one row per record, then write the per-day rollups the metrics "
                    "read (local datasets). Safe while ingest and queries run.")
    config.add_data_arg(p)
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds to keep replaced files for queries already reading them "
                        "(default %(default)s)")
    p.add_argument("--min-files", type=int, default=2,
                   help="compact partitions with at least this many files (default %(default)s)")
    p.add_argument("--row-group-rows", type=int, default=500_000,
                   help="rows per Parquet row group (default %(default)s)")
    add_format_arg(p)
    p.set_defaults(func=_compact)


def _compact(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fleetpulse.analytics.layout import list_layout
    from fleetpulse.analytics.rollups import write_rollups
    from fleetpulse.analytics.states import find_states
    from fleetpulse.output import print_table

    from .compact import compact
    from .store import Store

    config.require_dataset(args.data)
    store = Store(args.data)
    done = compact(store, args.grace, args.min_files, args.row_group_rows, rollups=False)
    # what was compacted is the result (stdout); what else happened is a note (stderr)
    notes = Console(stderr=True)
    if not done:
        notes.print(f"nothing to compact: no partition has {args.min_files} or more files")
    if done or args.format != "table":
        print_table(["table", "partition", "files_before", "rows_before", "rows_after"],
                    [(c.table, c.partition, c.files_before, c.rows_before, c.rows_after)
                     for c in done], args.format)
    days = write_rollups(store)
    if days:
        first, last = (d.removeprefix("date=") for d in (days[0], days[-1]))
        span = first if first == last else f"{first} .. {last}"
        notes.print(f"rolled up {len(days)} day(s): {span}")
    if store.local and (states := find_states(store, list_layout(store))) is not None:
        notes.print(f"per-device states over {states.first} .. {states.through}")
    return 0
