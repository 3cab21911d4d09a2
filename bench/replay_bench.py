"""Record and replay against the C clients and mqtt-recorder, on one broker, one run.

    .venv/bin/python bench/replay_bench.py [--messages 20000] [--drift-seconds 60]

1. record: mosquitto_pub -l (C) publishes the stream at QoS 1 while `fleetpulse record`
   and `mosquitto_sub -F '%j' > file` (C) both drain it; each consumer's rate is its
   messages over its own first-to-last receive time.
2. replay --fast: `fleetpulse replay --fast`, mosquitto_pub -l (the C limit) and
   mqtt-recorder (PyPI, its CSV with zero deltas) each publish the capture; rate as
   the C subscriber mosquitto_sub sees it (first to last arrival).
3. drift at speed 1: a capture of --drift-seconds at 20 messages/s replayed by
   fleetpulse and by mqtt-recorder (its recorded deltas); drift = how much later than
   scheduled the last message arrived, against the first (mosquitto_sub -F '%U').
4. offline: `fleetpulse replay --data` (ingest's pipeline, no broker), records/s: the
   median of 9 runs in 3 fresh processes, and the whole command with its start-up.
mqtt-recorder is installed into a temporary directory from the package index.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.simulators import capture
from fleetpulse.simulators.replay import replay_offline

RECORDS = 10  # records per envelope
T0 = 1767268800000


def envelope(i: int) -> bytes:
    recs = [{"t": T0 + i * 1000 + k, "type": "reading", "temperature_c": 20 + k * 0.1,
             "humidity_pct": 45.0} for k in range(RECORDS)]
    return json.dumps({"v": 1, "device_id": f"b-{i % 500}", "boot": 1, "seq": i // 500,
                       "fw": "1.0", "hw": "h", "sent_ms": T0 + i * 1000, "records": recs},
                      separators=(",", ":")).encode()


def make_capture(path: Path, n: int, every_ms: float) -> None:
    w = capture.CaptureWriter(path)
    for i in range(n):
        w.add(capture.Message(i, (T0 + i * 1000) * 1_000_000, int(i * every_ms * 1e6),
                              f"devices/b-{i % 500}/telemetry", envelope(i), 1, False))
    w.flush()


# Every subscriber first gets two messages of the probe that shows it subscribed (the
# retained probe and its clearing); counts below include them and rates leave them out.


def sub(broker: Broker, fmt: str, n: int, out: Path) -> subprocess.Popen:
    c = broker.credentials("fleetpulse-recorder")
    return subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
                             "-u", c.username, "-P", c.password, "-t", "devices/#", "-q", "1",
                             "-F", fmt, "-C", str(n)], stdout=out.open("w"))


def wait_subscribed(broker: Broker, out: Path, marker_lines: int = 1) -> None:
    """A retained probe reaches a subscriber as soon as it is subscribed."""
    pub = pub_cmd(broker, "devices/probe/status", ["-m", "probe", "-r"])
    subprocess.run(pub, check=True)
    deadline = time.monotonic() + 10
    while out.read_text().count("\n") < marker_lines:
        if time.monotonic() > deadline:
            raise RuntimeError("subscriber never got the probe")
        time.sleep(0.02)


def clear_probe(broker: Broker) -> None:
    subprocess.run(pub_cmd(broker, "devices/probe/status", ["-n", "-r"]), check=True)


def pub_cmd(broker: Broker, topic: str, extra: list[str]) -> list[str]:
    c = broker.credentials("fleetpulse-simulator")
    return ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-u", c.username,
            "-P", c.password, "-t", topic, "-q", "1", *extra]


def arrivals_U(out: Path) -> list[tuple[float, str]]:
    got = []
    for line in out.read_text().splitlines():
        stamp, _, payload = line.partition(" ")
        got.append((float(stamp), payload))
    return got


def finish(s: subprocess.Popen, timeout: float) -> None:
    """Wait for a subscriber to get its count; a publisher that lost messages never lets
    it, so after `timeout` it is stopped and what arrived is counted."""
    try:
        s.wait(timeout)
    except subprocess.TimeoutExpired:
        s.kill()
        s.wait()


def arrivals_during(broker: Broker, out: Path, count: int, run) -> list[float]:
    """Arrival times (s) at a C subscriber of the `count` messages `run()` publishes."""
    s = sub(broker, "%U %p", count + 2, out)
    wait_subscribed(broker, out)
    clear_probe(broker)
    run()
    finish(s, 30)
    return [t for t, _ in arrivals_U(out)[2:]]


def rate_of(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def offline_rates(cap: Path, where: Path, runs: int = 3) -> list[float]:
    """records/s of `runs` offline replays in a fresh process, after one to warm it."""
    code = (
        "import sys, time; from pathlib import Path\n"
        "from fleetpulse.simulators.replay import replay_offline\n"
        "cap, where = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "replay_offline(cap, where / 'warm')\n"
        f"for i in range({runs}):\n"
        "    t = time.perf_counter(); r = replay_offline(cap, where / str(i))\n"
        "    print(r.records / (time.perf_counter() - t))\n")
    out = subprocess.run([sys.executable, "-c", code, str(cap), str(where)], check=True,
                         capture_output=True, text=True).stdout
    return [float(x) for x in out.split()]


def install_mqtt_recorder(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--target", str(where), "mqtt-recorder"], check=True)
    return where


def mqtt_recorder_csv(cap: Path, out: Path, real_deltas: bool) -> None:
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        prev = None
        for m in capture.read(cap):
            delta = 0.0 if prev is None or not real_deltas else (m.offset_ns - prev) / 1e9
            prev = m.offset_ns
            w.writerow([m.topic, m.payload.decode(), m.qos, str(m.retain),
                        m.received_ns / 1e9, delta])


def run_mqtt_recorder(broker: Broker, lib: Path, csv_file: Path) -> None:
    c = broker.credentials("fleetpulse-simulator")
    env = {**os.environ, "PYTHONPATH": str(lib)}
    subprocess.run([sys.executable, "-m", "mqtt_recorder", "--host", broker.host, "--port",
                    str(broker.port), "--username", c.username, "--password", c.password,
                    "--mode", "replay", "--file", str(csv_file), "--client_id", "mqtt-rec"],
                   env=env, check=True, capture_output=True)


def fleetpulse(broker: Broker, *args: str) -> str:
    c = broker.credentials("fleetpulse-simulator")
    env = {**os.environ, "FLEETPULSE_MQTT_PASSWORD": c.password, "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "fleetpulse", *args,
                        "--username", c.username], env=env, check=True, capture_output=True,
                       text=True)
    return r.stdout + r.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--drift-seconds", type=int, default=60)
    args = ap.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        lib = install_mqtt_recorder(tmp / "mqtt_recorder_lib")
        fast_cap = tmp / "fast"
        make_capture(fast_cap, n, every_ms=0.0)
        lines = tmp / "lines.txt"
        lines.write_text("\n".join(m.payload.decode() for m in capture.read(fast_cap)) + "\n")
        results: dict[str, float | str] = {}

        # 4. offline: median of 9 runs, 3 in each of 3 fresh processes (after one run
        # there that pays the lazy imports: rates differ from process to process here by
        # up to a third), and as a user runs it, the whole command with its start-up
        rates = sorted(r for i in range(3) for r in offline_rates(fast_cap, tmp / f"off-{i}"))
        results["offline records/s (median of 9)"] = round(rates[4])
        results["offline records/s (slowest, fastest of 9)"] = f"{rates[0]:.0f}, {rates[-1]:.0f}"
        r = replay_offline(fast_cap, tmp / "offline-records")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fleetpulse", "replay", str(fast_cap),
                        "--data", str(tmp / "offline-cli")], check=True, capture_output=True)
        results["offline records/s (fleetpulse replay --data, whole command)"] = round(
            r.records / (time.perf_counter() - t))

        with Broker(free_port(), tmp / "broker") as broker:
            # 1. record against mosquitto_sub -F %j, both draining one C-published stream
            rec_out = tmp / "rec"
            c = broker.credentials("fleetpulse-recorder")
            rec = subprocess.Popen([sys.executable, "-m", "fleetpulse", "record",
                                    "--broker", broker.address, "--out", str(rec_out),
                                    "--count", str(n + 2), "--username", c.username],
                                   env={**os.environ, "FLEETPULSE_MQTT_PASSWORD": c.password},
                                   stderr=subprocess.DEVNULL)
            jfile = tmp / "sub.jsonl"
            js = sub(broker, "%j", n + 2, jfile)
            while not (rec_out / capture.MANIFEST).exists():
                time.sleep(0.02)
            wait_subscribed(broker, jfile)
            clear_probe(broker)
            subprocess.run(pub_cmd(broker, "devices/b-0/telemetry", ["-l"]),
                           stdin=lines.open(), check=True)
            finish(js, 60)
            rec.wait(60)
            c_times = [json.loads(x)["tst"] for x in jfile.read_text().splitlines()[2:]]
            from fleetpulse.simulators.capture_import import _mosquitto_time
            c_rate = rate_of([_mosquitto_time(x) / 1e9 for x in c_times])
            ours = [m.received_ns / 1e9 for m in capture.read(rec_out)
                    if m.topic != "devices/probe/status"]
            results["record msg/s (fleetpulse record)"] = round(rate_of(ours))
            results["record msg/s (mosquitto_sub -F %j)"] = round(c_rate)
            results["record ratio"] = round(rate_of(ours) / c_rate, 2)

            # 2. replay --fast against mosquitto_pub -l and mqtt-recorder
            rcsv = tmp / "fast.csv"
            mqtt_recorder_csv(fast_cap, rcsv, real_deltas=False)
            for name, run in (
                    ("fleetpulse replay --fast",
                     lambda: fleetpulse(broker, "replay", str(fast_cap), "--broker",
                                        broker.address, "--fast")),
                    ("mosquitto_pub -l (C)",
                     lambda: subprocess.run(pub_cmd(broker, "devices/b-0/telemetry", ["-l"]),
                                            stdin=lines.open(), check=True)),
                    ("mqtt-recorder", lambda: run_mqtt_recorder(broker, lib, rcsv))):
                times = arrivals_during(broker, tmp / f"arr-{len(results)}.txt", n, run)
                results[f"replay msg/s ({name})"] = round(rate_of(times))
                results[f"replay delivered of {n} ({name})"] = len(times)
            fp = results["replay msg/s (fleetpulse replay --fast)"]
            results["replay / C"] = round(fp / results["replay msg/s (mosquitto_pub -l (C))"],
                                          2)
            results["replay / mqtt-recorder"] = round(
                fp / results["replay msg/s (mqtt-recorder)"], 2)

            # 3. drift at speed 1
            dn = args.drift_seconds * 20
            timed = tmp / "timed"
            make_capture(timed, dn, every_ms=50.0)
            tcsv = tmp / "timed.csv"
            mqtt_recorder_csv(timed, tcsv, real_deltas=True)
            for name, run in (
                    ("fleetpulse", lambda: fleetpulse(broker, "replay", str(timed), "--broker",
                                                      broker.address, "--speed", "1")),
                    ("mqtt-recorder", lambda: run_mqtt_recorder(broker, lib, tcsv))):
                arr = arrivals_during(broker, tmp / f"drift-{name}.txt", dn, run)
                results[f"drift delivered of {dn} ({name})"] = len(arr)
                late = [(a - arr[0]) - i * 0.05 for i, a in enumerate(arr)]
                results[f"drift at speed 1, last message ms ({name})"] = round(late[-1] * 1000, 1)
                results[f"lateness p99 ms ({name})"] = round(sorted(late)[int(0.99 * len(late))]
                                                             * 1000, 1)
    from importlib.metadata import version

    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True,
                               text=True).stdout.split()[2]
    print(f"# replay_bench: {n} messages of {RECORDS} records ({len(envelope(0))} bytes), "
          f"drift over {args.drift_seconds} s at 20 msg/s")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, paho-mqtt {version('paho-mqtt')}, "
          f"pyarrow {version('pyarrow')}, msgspec {version('msgspec')}, mosquitto {mosquitto}")
    for k, v in results.items():
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
