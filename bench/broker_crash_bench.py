"""What a SIGKILL of mosquitto loses of messages it had acknowledged to devices, and
what each persistence setting costs, in one run on this machine.

    .venv/bin/python bench/broker_crash_bench.py [--messages 20500] [--setting off ...]

For each setting, a fresh broker from the repository's mosquitto.conf (only the
autosave lines replaced) holds ingest's persistent session. Two scenarios:
  offline: ingest is stopped while the fleet publishes, so the broker queues every
           message for it; the broker is SIGKILLed right after the last PUBACK. The
           worst case: everything since the last save is only in the broker's memory.
  online:  ingest runs; the broker is SIGKILLed when half the load is acknowledged;
           the fleet reconnects and finishes (paho re-sends what was not acked).
Then the broker restarts from its persistence file, ingest drains, and the bench counts
messages acknowledged to the fleet that never reached the dataset. The cost is the
fleet's publish rate (QoS 1, acked) with the setting, against the same load with
persistence off in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
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
    "100": ("autosave_on_changes, every 100 changes",
            "autosave_on_changes true\nautosave_interval 100"),
    # every save rewrites the whole store: with a queue of thousands this takes minutes,
    # so it is not in the default set
    "1": ("autosave_on_changes, every change", "autosave_on_changes true\nautosave_interval 1"),
}
DEFAULT_SETTINGS = ["off", "30s", "1000", "100"]


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


def run(setting: str, scenario: str, messages: int, work: Path) -> dict:
    work.mkdir(parents=True)
    conf = conf_with(setting, work / "mosquitto.conf")
    port = free_port()
    broker = Broker(port, work / "broker", conf=conf).start()
    data = work / "data"
    cid = "crash-ingest"

    def ingest() -> IngestProcess:
        return IngestProcess(broker.address, data, client_id=cid, log_path=work / "ingest.log",
                             extra_args=["--flush-seconds", "0.3"],
                             credentials=ingest_credentials(broker)).start()

    # the persistent session exists and is saved before the load (a graceful restart)
    first = ingest()
    first.wait_subscribed()
    first.stop()
    broker.stop()
    broker.start()
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
    ap.add_argument("--scenario", choices=["offline", "online", "both"], default="both")
    args = ap.parse_args()
    scenarios = ["offline", "online"] if args.scenario == "both" else [args.scenario]
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        chosen = ["off", *[k for k in (args.setting or DEFAULT_SETTINGS) if k != "off"]]
        for k, key in enumerate(chosen):
            name, setting = SETTINGS[key]
            for scenario in scenarios:
                r = run(setting, scenario, args.messages, Path(tmp) / f"{k}-{scenario}")
                r["name"] = name
                results.append(r)
                print(json.dumps(r), file=sys.stderr)
    base = {r["scenario"]: r["publish_rate"] for r in results if r["name"] == "persistence off"}
    print("| setting | scenario | acked to devices | stored | lost | publish msg/s "
          "| vs persistence off |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['name']} | {r['scenario']} | {r['acked']:,} | {r['stored']:,} | "
              f"{r['lost']:,} | {r['publish_rate']:,.0f} | "
              f"{r['publish_rate'] / base[r['scenario']]:.2f} |")


if __name__ == "__main__":
    main()
