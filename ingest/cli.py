"""`fleetpulse ingest`."""

from __future__ import annotations

import argparse
import asyncio

from fleetpulse.gateway import config

from .service import IngestConfig, run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="MQTT telemetry -> validated rows -> Parquet",
                       description="Subscribe to devices/+/telemetry and write Parquet "
                                   "partitioned by UTC date. SIGINT/SIGTERM flush and exit.")
    config.add_broker_arg(p)
    config.add_data_arg(p)
    p.add_argument("--client-id", default=config.env("INGEST_CLIENT_ID", "fleetpulse-ingest"),
                   help="MQTT client id of the persistent session (env "
                        "FLEETPULSE_INGEST_CLIENT_ID, default %(default)s)")
    p.add_argument("--flush-rows", type=int,
                   default=int(config.env("FLUSH_ROWS", "50000") or 50000),
                   help="flush when this many rows are buffered (env FLEETPULSE_FLUSH_ROWS, "
                        "default %(default)s)")
    p.add_argument("--flush-seconds", type=float,
                   default=float(config.env("FLUSH_SECONDS", "5") or 5),
                   help="flush when the oldest buffered row is this old (env "
                        "FLEETPULSE_FLUSH_SECONDS, default %(default)s)")
    p.add_argument("--session-expiry", type=int,
                   default=int(config.env("SESSION_EXPIRY", str(7 * 86400)) or 0),
                   help="seconds the broker keeps messages for a stopped ingest (env "
                        "FLEETPULSE_SESSION_EXPIRY, default %(default)s)")
    p.add_argument("--username", default=config.env("MQTT_USERNAME"),
                   help="MQTT username (env FLEETPULSE_MQTT_USERNAME)")
    p.add_argument("--password", default=config.env("MQTT_PASSWORD"),
                   help="MQTT password (env FLEETPULSE_MQTT_PASSWORD)")
    p.set_defaults(func=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    host, port = config.parse_broker(args.broker)
    cfg = IngestConfig(
        host=host, port=port, data_dir=args.data, client_id=args.client_id,
        flush_rows=args.flush_rows, flush_seconds=args.flush_seconds,
        session_expiry_s=args.session_expiry, username=args.username, password=args.password,
    )
    asyncio.run(run(cfg))
    return 0
