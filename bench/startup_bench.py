"""What every `fleetpulse` command pays before it does anything: interpreter start, imports,
building the parser. Timed as the user waits for it (a whole process), against the bare
interpreter in the same run, and broken down by the modules that cost the most.

Usage: .venv/bin/python bench/startup_bench.py [--runs 21]
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import time

# Loaded only by the commands that need them since a8e1db0 (mpremote brings
# importlib.metadata): what every command paid for them before.
DEFERRED = ("fleetpulse.firmware.flash", "fleetpulse.firmware.board_link", "importlib.metadata")


def wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def top_imports(n: int = 8) -> list[tuple[str, float]]:
    """The top-level imports of building the parser, by cumulative ms (-X importtime)."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "from fleetpulse.cli import build_parser; build_parser()"],
                         capture_output=True, text=True, check=True).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)$", line)
        if m and len(m.group(2)) <= 2:  # the CLI's own imports and theirs, one level down
            rows.append((("  " if m.group(2) else "") + m.group(3), int(m.group(1)) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=21)
    a = ap.parse_args()
    py = sys.executable
    bare = wall([py, "-c", "pass"], a.runs)
    version = wall([py, "-m", "fleetpulse", "--version"], a.runs)
    parser = "from fleetpulse.cli import build_parser; build_parser()"
    built = wall([py, "-c", parser], a.runs)
    deferred = wall([py, "-c", f"{parser}; import {', '.join(DEFERRED)}"], a.runs)
    print(f"python {platform.python_version()}, {platform.machine()}, median of {a.runs} runs")
    print("| what | wall ms | vs bare interpreter |\n| --- | --- | --- |")
    print(f"| `python -c pass` (bare interpreter) | {bare * 1000:.0f} | 1.00 |")
    print(f"| `fleetpulse --version` (every command's start) | {version * 1000:.0f} | "
          f"{version / bare:.2f} |")
    print(f"| building the parser, then importing what is now deferred "
          f"({', '.join(DEFERRED)}): what every command paid before | "
          f"{deferred * 1000:.0f} (+{(deferred - built) * 1000:.0f} over the parser alone, "
          f"{built * 1000:.0f}) | {deferred / bare:.2f} |")
    print("\n| import while building the parser (one run) | cumulative ms |\n| --- | --- |")
    for name, ms in top_imports():
        print(f"| `{name}` | {ms:.1f} |")


if __name__ == "__main__":
    main()
