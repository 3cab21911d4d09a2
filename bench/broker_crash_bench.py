"""What a SIGKILL of mosquitto loses of messages it had acknowledged to devices, and
what each persistence setting costs, in one run on this machine.

    .venv/bin/python bench/broker_crash_bench.py [--messages 20500] [--setting off ...]
    .venv/bin/python bench/broker_crash_bench.py --scenario backlog [--devices 1000]

For each setting, a fresh broker from the repository's mosquitto.conf (only the
autosave lines replaced) holds ingest's persistent session. Three scenarios:
  offline: ingest is stopped while the fleet publishes, so the broker queues every
           message for it; the broker is SIGKILLed right after the last PUBACK. The
           worst case: everything since the last save is only in the broker's memory.
  online:  ingest runs; the broker is SIGKILLed when half the load is acknowledged;
           the fleet reconnects and finishes (paho re-sends what was not acked).
Then the broker restarts from its persistence file, ingest drains, and the bench counts
messages acknowledged to the fleet that never reached the dataset. The cost is the
fleet's publish rate (QoS 1, acked) with the setting, against the same load with
persistence off in the same run.
  backlog: the cost at a fleet's full speed, no kill. The publisher of the two scenarios
           above takes about 5K msg/s, too slow to show what a save costs; here
           `fleetpulse simulate --devices N --days 30` (about 490 messages a device)
           publishes while ingest is away, then ingest drains the backlog. Publish and
           drain rates against persistence off in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import LoadPublisher, ingest_credentials  # noqa: E402

from fleetpulse.analytics.dataset import connect  # noqa: E402
from fleetpulse.gateway.broker import DEFAULT_CONF, Broker, free_port  # noqa: E402
from fleetpulse.ingest.process import IngestProcess  # noqa: E402

# short name -> (label, the lines that replace mosquitto.conf's autosave settings)
SETTINGS = {
    "off": ("persistence off", "persistence false"),
    "30s": ("autosave_interval 30 (s)", "autosave_interval 30"),
    "1000": ("autosave_on_changes, every 1000 changes",
             "autosave_on_changes true\nautosave_interval 1000"),
    "10000": ("autosave_on_changes, every 10000 changes",
              "autosave_on_changes true\nautosave_interval 10000"),
    # mosquitto saves when more than this many whole seconds have passed: every ~2 s
    "1s": ("autosave_interval 1 (s)", "autosave_interval 1"),
    "100": ("autosave_on_changes, every 100 changes",
            "autosave_on_changes true\nautosave_interval 100"),
    # every save rewrites the whole store: with a queue of thousands this takes minutes,
    # so it is not in the default set
    "1": ("autosave_on_changes, every change", "autosave_on_changes true\nautosave_interval 1"),
}
DEFAULT_SETTINGS = ["off", "30s", "1s", "1000", "100"]


def conf_with(setting: str, out: Path) -> Path:
    lines = [ln for ln in DEFAULT_CONF.read_text().splitlines()
             if not ln.startswith(("autosave_interval", "autosave_on_changes"))]
    if setting.startswith("persistence false"):
        lines = [ln for ln in lines if not ln.startswith("persistence true")]
    i = next(n for n, ln in enumerate(lines) if ln.startswith("persistence_location"))
    lines[i + 1:i + 1] = setting.splitlines()
    out.write_text("\n".join(lines) + "\n")
    return out


def stored(data: Path) -> int:
    if not list(data.glob("readings/*/*.parquet")):
        return 0
    con = connect(data)
    try:
        return con.execute("SELECT count(DISTINCT (device_id, boot, seq)) FROM readings"
                           ).fetchone()[0]
    finally:
        con.close()


def drain(ingest: IngestProcess, data: Path, want: int, timeout: float = 120) -> int:
    """Stored messages once ingest has taken everything the broker still had."""
    deadline = time.monotonic() + timeout
    last, still = -1, 0
    while time.monotonic() < deadline:
        n = stored(data)
        if n >= want:
            return n
        still = still + 1 if n == last else 0
        if still >= 20:  # nothing new for 20 polls of 0.25 s: the broker has no more
            return n
        last = n
        time.sleep(0.25)
    return stored(data)


def with_session(setting: str, work: Path, saved: bool = True
                 ) -> tuple[Broker, Path, Callable[[], IngestProcess]]:
    """A fresh broker that holds ingest's persistent session (saved to its store by a
    graceful restart, so that a SIGKILL cannot take the session itself), its dataset,
    and how to start ingest on it."""
    work.mkdir(parents=True)
    conf = conf_with(setting, work / "mosquitto.conf")
    broker = Broker(free_port(), work / "broker", conf=conf).start()
    data = work / "data"

    def ingest() -> IngestProcess:
        return IngestProcess(broker.address, data, client_id="crash-ingest",
                             log_path=work / "ingest.log",
                             extra_args=["--flush-seconds", "0.3"],
                             credentials=ingest_credentials(broker)).start()

    first = ingest()
    first.wait_subscribed()
    first.stop()
    if saved:
        broker.stop()
        broker.start()
    return broker, data, ingest


def backlog(setting: str, devices: int, work: Path) -> dict:
    broker, _, ingest = with_session(setting, work, saved=False)
    t0 = time.monotonic()
    sim = subprocess.run(
        [sys.executable, "-m", "fleetpulse", "simulate", "--broker", broker.address,
         "--registry", str(broker.registry.dir), "--devices", str(devices), "--days", "30",
         "--seed", "7", "--no-progress", "--truth", str(work / "truth.json")],
        capture_output=True, text=True, check=True)
    publish_s = time.monotonic() - t0
    acked = int(re.search(r"published ([\d,]+) messages", sim.stdout)[1].replace(",", ""))
    t0 = time.monotonic()
    drainer = ingest()
    drainer.wait_messages(acked, timeout=900)
    drain_s = time.monotonic() - t0
    drainer.stop()
    broker.stop()
    return {"setting": setting, "scenario": "backlog", "acked": acked,
            "publish_rate": acked / publish_s, "drain_rate": acked / drain_s}


def run(setting: str, scenario: str, messages: int, work: Path) -> dict:
    broker, data, ingest = with_session(setting, work)
    live = ingest() if scenario == "online" else None
    if live:
        live.wait_subscribed()
    load = LoadPublisher(broker, messages=messages, per_message=1, devices=100,
                         prefix="crash")
    t0 = time.monotonic()
    kill_at = messages // 2 if scenario == "online" else messages
    killed = False
    for i in range(messages):
        load.pub.publish(*load.envelope(i))
        if not killed and load.acked >= kill_at:
            break
    if scenario == "offline":
        load.pub.drain(120)
    publish_s = time.monotonic() - t0
    acked_before_kill = load.acked
    os.kill(broker.proc.pid, signal.SIGKILL)
    broker.proc.wait()
    broker.start()
    if scenario == "online":
        sent = load.pub.sent
        for i in range(sent, messages):
            load.pub.publish(*load.envelope(i))
        load.pub.drain(120)
    acked = load.acked
    load.close()
    live = live or ingest()
    n = drain(live, data, acked)
    live.stop()
    broker.stop()
    return {"setting": setting, "scenario": scenario, "acked": acked,
            "acked_before_kill": acked_before_kill, "stored": n, "lost": acked - n,
            "publish_rate": acked_before_kill / publish_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_500)
    ap.add_argument("--setting", action="append", choices=list(SETTINGS),
                    help=f"repeatable (default: {' '.join(DEFAULT_SETTINGS)}); 'off' is the "
                         "baseline of the cost column and always runs")
    ap.add_argument("--scenario", choices=["offline", "online", "both", "backlog"],
                    default="both")
    ap.add_argument("--devices", type=int, default=1000, help="the backlog scenario's fleet")
    args = ap.parse_args()
    scenarios = ["offline", "online"] if args.scenario == "both" else [args.scenario]
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        chosen = ["off", *[k for k in (args.setting or DEFAULT_SETTINGS) if k != "off"]]
        for k, key in enumerate(chosen):
            name, setting = SETTINGS[key]
            for scenario in scenarios:
                work = Path(tmp) / f"{k}-{scenario}"
                r = (backlog(setting, args.devices, work) if scenario == "backlog"
                     else run(setting, scenario, args.messages, work))
                r["name"] = name
                results.append(r)
                print(json.dumps(r), file=sys.stderr)
    if args.scenario == "backlog":
        print_backlog(results)
        return
    base = {r["scenario"]: r["publish_rate"] for r in results if r["name"] == "persistence off"}
    print("| setting | scenario | acked to devices | stored | lost | publish msg/s "
          "| vs persistence off |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['name']} | {r['scenario']} | {r['acked']:,} | {r['stored']:,} | "
              f"{r['lost']:,} | {r['publish_rate']:,.0f} | "
              f"{r['publish_rate'] / base[r['scenario']]:.2f} |")


def print_backlog(results: list[dict]) -> None:
    base = next(r for r in results if r["name"] == "persistence off")
    print("| setting | messages | publish msg/s, ingest away | vs persistence off "
          "| ingest drain msg/s | vs persistence off |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['name']} | {r['acked']:,} | {r['publish_rate']:,.0f} | "
              f"{r['publish_rate'] / base['publish_rate']:.2f} | {r['drain_rate']:,.0f} | "
              f"{r['drain_rate'] / base['drain_rate']:.2f} |")


if __name__ == "__main__":
    main()
