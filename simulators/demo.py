"""`fleetpulse demo`: broker, ingest, a simulated fleet and the metrics, in one command.

Everything it starts it also stops, on success, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from fleetpulse.analytics.cli import print_metrics
from fleetpulse.errors import UserError
from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.ingest.process import IngestProcess

from .simulate import simulate


def run_demo(devices: int, days: int, seed: int, workdir: Path | None) -> int:
    console = Console()
    keep = workdir is not None
    root = workdir.resolve() if workdir else Path(tempfile.mkdtemp(prefix="fleetpulse-demo-"))
    data = root / "data"
    t0 = time.monotonic()
    broker = Broker(free_port(), root / "broker")
    ingest: IngestProcess | None = None
    try:
        broker.start()
        ing = broker.credentials("fleetpulse-ingest")
        fleet = broker.credentials("fleetpulse-simulator")
        ingest = IngestProcess(broker.address, data, log_path=root / "ingest.log",
                               extra_args=["--flush-seconds", "1"],
                               credentials=(ing.username, ing.password))
        console.print(f"[bold]1/4[/] mosquitto up on {broker.address}")
        ingest.start().wait_subscribed()
        console.print(f"[bold]2/4[/] ingest subscribed, writing Parquet to {data}")
        truth = simulate(broker.host, broker.port, devices, days, seed,
                         truth_path=root / "truth.json", username=fleet.username,
                         password=fleet.password)
        with console.status("[bold]3/4[/] ingest catching up with the broker..."):
            ingest.wait_messages(truth["messages"], timeout=180)
            code = ingest.stop()
        if code != 0:
            raise UserError(f"ingest exited with {code}: see {ingest.log_path}")
        s = ingest.stats()
        console.print(
            f"[bold]3/4[/] published {truth['messages']:,} messages with {truth['records']:,} "
            f"records; ingest stored {s['readings'] + s['events']:,} rows, quarantined "
            f"{s['messages_rejected'] + s['records_rejected']}"
        )
        console.print("[bold]4/4[/] product metrics, computed by DuckDB from the Parquet files:\n")
        print_metrics(data, console)
        console.print(f"demo finished in {time.monotonic() - t0:.0f}s. Query it yourself:\n"
                      f"  fleetpulse sql --data {data} \"SELECT * FROM devices LIMIT 5\""
                      if keep else f"demo finished in {time.monotonic() - t0:.0f}s "
                      "(run with --workdir DIR to keep the dataset)")
        return 0
    finally:
        if ingest is not None:
            ingest.kill()
        broker.stop()
        if not keep:
            with contextlib.suppress(OSError):
                shutil.rmtree(root)
