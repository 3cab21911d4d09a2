"""Firmware footprint: bundle size per board, and the heap the firmware needs on the
sim board during a 10-minute virtual run against a real mosquitto.

Heap is measured two ways, both in the real MicroPython VM running the sim bundle:
- the smallest `-X heapsize` with which the whole run completes and every envelope is
  acknowledged (found by bisection): what a board must have free;
- the largest live heap (after a collection) at any idle point of the loop.
and for two deployments: .mpy files on the filesystem (imports copy the bytecode into
RAM), and a ROMFS image mounted at /rom (bytecode runs in place from flash). The unix
port has no memory-mapped flash, so there the image sits in one heap block allocated
before the firmware starts; its exact size is printed by the boot shim and taken off.

Usage: .venv/bin/python bench/firmware_bench.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from fleetpulse.firmware.bundle import build
from fleetpulse.firmware.loop import command, prepare_flash
from fleetpulse.gateway.broker import Broker, free_port

TARGET_HEAP = 40 * 1024
TARGET_BUNDLE = 48 * 1024


def scenario(minutes: int) -> dict:
    s = minutes * 60
    return {
        "speed": 100,
        "duration_s": s,
        "environment": {"temperature_c": [21.0, 2.0, 3600], "humidity_pct": [45.0, 5.0, 7200]},
        # a press every 20 s, and an outage of a fifth of the run to fill the journal
        "inputs": [{"at_s": t, "button": "eco" if t % 40 else "fan"} for t in range(5, s, 20)],
        "network_down": [[s * 0.4, s * 0.6]],
    }


def run_once(broker: Broker, password: str, bundle: Path, work: Path, minutes: int,
             heap: str | None, stats: bool = False, timeout: float = 60,
             romfs: Path | None = None) -> tuple[bool, str, float]:
    flash = work / f"flash-{heap}"
    cfg = {"device_id": "bench-0001",
           "mqtt": {"host": broker.host, "port": broker.port, "username": "bench-0001",
                    "password": password},
           "settings": {"sample_s": 10, "flush_s": 60, "heartbeat_s": 120}}
    (work / "config.json").write_text(json.dumps(cfg))
    (work / "scenario.json").write_text(json.dumps(scenario(minutes)))
    prepare_flash(flash, work / "config.json", bundle / "main.py" if romfs else None)
    argv, env = command(flash, work / "scenario.json", bundle, heap, romfs)
    if stats:
        env["FLEETPULSE_SIM_HEAP"] = "1"
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=flash, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        # too little heap can also mean collecting so often that the run crawls
        return False, f"timed out: {e.stdout!r}"[-2000:], time.monotonic() - t0
    out = proc.stdout + proc.stderr
    ok = (proc.returncode == 0 and "all acknowledged" in out and "MemoryError" not in out
          and "unexpected error" not in out)
    return ok, out, time.monotonic() - t0


def measure(broker: Broker, password: str, bundle: Path, work: Path, minutes: int,
            romfs: Path | None) -> dict[str, float]:
    """Live heap peak and smallest heap (KiB) for one deployment, the ROMFS image's own
    heap block taken off both."""
    ok, out, secs = run_once(broker, password, bundle, work, minutes, None, stats=True,
                             romfs=romfs)
    assert ok, out
    live = int(out.split("live heap peak ")[1].split()[0])
    image = int(out.split("mounted at /rom, ")[1].split()[0]) if romfs else 0
    lo, hi = 4, 96  # KiB: the run fails at lo (assumed), passes at hi (checked)
    assert run_once(broker, password, bundle, work, minutes, f"{hi}K", romfs=romfs)[0], \
        f"does not run in {hi} KiB"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run_once(broker, password, bundle, work, minutes, f"{mid}K", romfs=romfs)[0]:
            hi = mid
        else:
            lo = mid
    return {"secs": secs, "image": image, "live": live - image,
            "smallest_kib": hi - image / 1024, "heapsize_kib": hi}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sizes = {b: build(b, work / f"bundle-{b}")["total_bytes"] for b in ("esp32", "rp2")}
        sim = build("sim", work / "bundle-sim", romfs=True)
        with Broker(free_port(), work / "broker") as broker:
            password = broker.registry.add("bench-0001").password
            time.sleep(0.5)  # the broker rereads its password file on SIGHUP
            results = {
                "files": measure(broker, password, work / "bundle-sim", work, args.minutes,
                                 None),
                "romfs": measure(broker, password, work / "bundle-sim", work, args.minutes,
                                 work / "bundle-sim" / "romfs.img"),
            }
    print(f"{args.minutes}-minute virtual run on the sim board "
          f"({results['files']['secs']:.1f} s real); heap target < {TARGET_HEAP // 1024} KiB")
    for name, r in results.items():
        what = (".mpy files on the filesystem" if name == "files" else
                f"ROMFS image ({sim['romfs']['bytes']:,} bytes; {r['image']:,} bytes of heap "
                f"taken off)")
        print(f"{what}: largest live heap {r['live']:,} bytes; smallest heap "
              f"{r['smallest_kib']:.1f} KiB (-X heapsize={r['heapsize_kib']}K)")
    for b, n in sizes.items():
        print(f"bundle {b}: {n:,} bytes (target < {TARGET_BUNDLE:,})")


if __name__ == "__main__":
    main()
