"""`fleetpulse demo` end to end as a user runs it: metrics printed, nothing left running."""

from __future__ import annotations

import os
import subprocess
import sys


def _processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -eo" not in line]


def test_demo_prints_metrics_and_leaves_nothing_running(tmp_path) -> None:
    work = tmp_path / "demo-work"
    r = subprocess.run(
        [sys.executable, "-m", "fleetpulse", "demo", "--devices", "30", "--days",
         "5", "--workdir", str(work)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "160"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Daily active devices" in r.stdout and "Feature adoption" in r.stdout
    assert "quarantined 0" in r.stdout
    assert _processes_mentioning(str(work)) == []
    assert (work / "truth.json").exists() and list((work / "data" / "events").iterdir())
