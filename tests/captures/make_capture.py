"""Record tests/captures/fleet: the capture the project's own CI replays.

    .venv/bin/python tests/captures/make_capture.py

Starts a mosquitto from the repository's mosquitto.conf, records `devices/#` with
`fleetpulse record`'s code while three sources publish through the real broker:
  - the simulator: 12 devices for 7 days (contract-v1 envelopes, retained status);
  - the firmware, unmodified, in the MicroPython unix port on the sim board, for 10
    virtual minutes with button presses;
  - a hostile client: malformed JSON, a wrong type, a spoofed topic (an envelope naming
    another device), an unknown envelope version, binary garbage.
Then writes tests/captures/fleet.golden.json from an offline replay. Run it again only
when the capture should change; the golden file then changes with it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/ helpers: the firmware device

from firmwarelib import SimDevice  # noqa: E402

from fleetpulse.gateway.broker import Broker, free_port  # noqa: E402
from fleetpulse.simulators import capture  # noqa: E402
from fleetpulse.simulators.publisher import Publisher  # noqa: E402
from fleetpulse.simulators.record import record  # noqa: E402
from fleetpulse.simulators.replay import golden  # noqa: E402
from fleetpulse.simulators.simulate import simulate  # noqa: E402

OUT = HERE / "fleet"
GOLDEN = HERE / "fleet.golden.json"


def hostile(broker: Broker) -> int:
    cred = broker.credentials("fleetpulse-simulator")
    pub = Publisher(broker.host, broker.port, cred.username, cred.password)
    now = int(datetime.now(UTC).timestamp() * 1000)
    good = {"v": 1, "device_id": "hostile-1", "boot": 1, "seq": 0, "fw": "1.0", "hw": "h",
            "sent_ms": now, "records": [{"t": now, "type": "event", "event": "button_press"}]}
    payloads = [
        ("devices/hostile-1/telemetry", b'{"v": 1, "device_id": "hostile-1", "records": ['),
        ("devices/hostile-1/telemetry", json.dumps({**good, "boot": "one"}).encode()),
        ("devices/hostile-2/telemetry", json.dumps(good).encode()),  # spoofed: names hostile-1
        ("devices/hostile-1/telemetry", json.dumps({**good, "v": 99}).encode()),
        ("devices/hostile-1/telemetry", bytes(range(256)) * 4),
        ("devices/hostile-1/telemetry", json.dumps(good).encode()),  # and one good one
    ]
    for topic, payload in payloads:
        pub.publish(topic, payload)
    pub.close()
    return len(payloads)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, Broker(free_port(), Path(tmp) / "b") as broker:
        if OUT.exists():
            shutil.rmtree(OUT)
        stop, ready = threading.Event(), threading.Event()
        cred = broker.credentials("fleetpulse-recorder")
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", record(
            broker.host, broker.port, OUT, "devices/#", username=cred.username,
            password=cred.password, progress=False, ready=ready, stop=stop)))
        t.start()
        ready.wait(10)
        sim = broker.credentials("fleetpulse-simulator")
        start = (datetime.now(UTC) - timedelta(days=7)).date()
        truth = simulate(broker.host, broker.port, devices=12, days=7, seed=15, start=start,
                         progress=False, username=sim.username, password=sim.password)
        dev = SimDevice(broker, Path(tmp) / "fw", "fw-capture-01",
                        settings={"sample_s": 30, "flush_s": 60, "heartbeat_s": 120},
                        scenario={"speed": 60, "duration_s": 600,
                                  "inputs": [{"at_s": s, "button": "eco"}
                                             for s in (20, 35, 200, 420)]})
        dev.run()
        n_hostile = hostile(broker)
        # the end: recorded like everything else, and once it is on disk so is the rest
        end = Publisher(broker.host, broker.port, sim.username, sim.password)
        end.publish("devices/capture-end/status", b"end")
        end.close()
        import time

        deadline = time.monotonic() + 30
        while not any(m.topic == "devices/capture-end/status" for m in capture.read(OUT)):
            assert time.monotonic() < deadline, "the recorder never wrote the end marker"
            time.sleep(0.5)
        stop.set()
        t.join(30)
        expected = truth["messages"] + n_hostile + 1
        r = result["r"]
        print(f"recorded {r.messages} messages ({r.payload_bytes / 1e6:.2f} MB of payload); "
              f"the simulator sent {truth['messages']}, the hostile client {n_hostile}, "
              f"the firmware the rest ({r.messages - expected})")
    golden(OUT, GOLDEN, update=True)
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({size / 1e6:.2f} MB on disk) and {GOLDEN}")


if __name__ == "__main__":
    main()
