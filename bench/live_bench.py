"""A live fleet of N devices, each its own MQTT connection, against the real broker.

    .venv/bin/python bench/live_bench.py [--devices 5000] [--speed 60] [--duration 90]
        [--restart-after 30]

A broker from the repository's mosquitto.conf (authentication and ACL on) and a running
`fleetpulse ingest`, both fresh. The fleet (simulators/live.py) runs in this process, so
its counters can be read as they change. Timed:
- provisioning: the N device accounts written to the registry and the broker reloaded;
- connect: from the start until every device has its session (CONNACK, retained
  `online`, config subscription);
- the broker's and the fleet process's RSS once all are connected;
- a broker restart (SIGTERM, start again) --restart-after seconds in: the time until every
  device is back online, and until every journal is empty again (all the envelopes made
  while the broker was away acknowledged);
- at the end, ingest's dataset checked against the truth: the distinct readings and
  events of the run's installs equal what the broker acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import pyarrow as pa

from fleetpulse.analytics.dataset import connect
from fleetpulse.files import raise_open_files_limit
from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.ingest.process import IngestProcess
from fleetpulse.simulators.live import LiveFleet, VirtualClock, make_live_device, provision


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def until(condition, step: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    while not condition():
        await asyncio.sleep(step)
    return time.monotonic() - began


def stored(data: Path, plan: dict[str, str]) -> tuple[int, int]:
    run = pa.table({"device_id": list(plan), "iid": list(plan.values())})
    con = connect(data)
    try:
        con.register("run", run)
        return con.execute(
            "SELECT (SELECT count(*) FROM readings JOIN run USING (device_id, iid)),"
            "       (SELECT count(*) FROM events JOIN run USING (device_id, iid))").fetchone()
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--speed", type=float, default=60)
    ap.add_argument("--duration", type=float, default=90)
    ap.add_argument("--restart-after", type=float, default=30)
    args = ap.parse_args()
    raise_open_files_limit(args.devices + 256)  # the broker started below inherits it
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker = Broker(free_port(), tmp / "broker").start()
        c = broker.credentials("fleetpulse-ingest")
        ingest = IngestProcess(broker.address, tmp / "data", log_path=tmp / "ingest.log",
                               credentials=(c.username, c.password)).start()
        try:
            ingest.wait_subscribed()
            devices = [make_live_device(7, i) for i in range(args.devices)]
            t = time.monotonic()
            credentials = provision(broker.registry, devices)
            provision_s = time.monotonic() - t
            clock = VirtualClock(args.speed, args.duration)
            n = args.devices

            async def run() -> dict[str, float]:
                fleet = LiveFleet(broker.host, broker.port, devices, credentials, clock)
                began = time.monotonic()
                living = asyncio.create_task(fleet.run(args.duration, drain_timeout=120))
                out = {"connect_s": await until(lambda: fleet.counts.connected == n)}
                out["broker_rss_mb"] = rss_mb(broker.proc.pid)
                out["fleet_rss_mb"] = rss_mb(os.getpid())
                await asyncio.sleep(max(0.0, args.restart_after - (time.monotonic() - began)))
                loop = asyncio.get_running_loop()
                t = time.monotonic()
                await loop.run_in_executor(None, broker.stop)
                out["journaled_at_restart"] = sum(len(x.journal) for x in devices)
                await loop.run_in_executor(None, broker.start)
                restarted = time.monotonic()
                out["broker_down_s"] = restarted - t
                out["back_online_s"] = await until(lambda: fleet.counts.connected == n)
                out["journals_empty_s"] = (await until(lambda: not any(x.journal for x in devices))
                                           + out["back_online_s"])
                unsent = await living
                out["unsent"] = unsent
                out["messages"] = fleet.truth.messages
                out["readings"] = fleet.truth.readings
                out["events"] = sum(fleet.truth.events.values())
                out["reconnects"] = fleet.counts.reconnects
                return out

            r = asyncio.run(run())
            plan = {x.device_id: x.iid for x in devices}
            t = time.monotonic()
            ingest.wait_messages(int(r["messages"]), timeout=600)
            while stored(tmp / "data", plan) != (r["readings"], r["events"]):
                if time.monotonic() - t > 120:
                    raise SystemExit(f"stored {stored(tmp / 'data', plan)}, acknowledged "
                                     f"{(r['readings'], r['events'])}")
                time.sleep(0.5)
        finally:
            ingest.kill()
            broker.stop()
    print(f"# {args.devices:,} live devices, speed {args.speed:g}, {args.duration:g} s, broker "
          f"restarted at {args.restart_after:g} s; {platform.node()} {platform.machine()}, "
          f"Python {platform.python_version()}, aiomqtt {aiomqtt.__version__}, open files "
          f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    print("| what | value |")
    print("| --- | --- |")
    rows = [("provision N accounts (registry + broker reload)", f"{provision_s:.2f} s"),
            ("connect: every device online", f"{r['connect_s']:.2f} s"),
            ("broker RSS, all connected", f"{r['broker_rss_mb']:.0f} MB"),
            ("fleet process RSS, all connected", f"{r['fleet_rss_mb']:.0f} MB"),
            ("broker stop + start", f"{r['broker_down_s']:.2f} s"),
            ("envelopes journaled when the broker stopped", f"{r['journaled_at_restart']:,}"),
            ("after the restart: every device back online", f"{r['back_online_s']:.2f} s"),
            ("after the restart: every journal empty (all acknowledged)",
             f"{r['journals_empty_s']:.2f} s"),
            ("reconnects", f"{r['reconnects']:,}"),
            ("envelopes acknowledged (truth)", f"{r['messages']:,}"),
            ("readings / events stored of this run = truth",
             f"{r['readings']:,} / {r['events']:,}: equal")]
    for what, value in rows:
        print(f"| {what} | {value} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
