"""Mistakes that used to give a plausible answer and exit 0: each is now one line on
stderr and exit 2 (issue: a CLI that never misleads)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import fleetpulse

from fleetpulse.ingest.pipeline import Pipeline

T0 = 1767268800000


def one_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not p.stdout.strip()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo/data as `fleetpulse demo` lays it out, with a few rows."""
    root = tmp_path_factory.mktemp("work") / "demo"
    data = root / "data"
    p = Pipeline(data, "w")
    import json
    for seq in range(3):
        env = {"v": 1, "device_id": "cli-1", "boot": 1, "seq": seq, "fw": "1.0.0", "hw": "t",
               "sent_ms": T0 + seq, "records": [
                   {"t": T0 + seq, "type": "event", "event": "feature_used",
                    "feature": "eco_mode"}]}
        p.handle("devices/cli-1/telemetry", json.dumps(env).encode(), T0 + 10_000)
    p.flush()
    (root / "truth.json").write_text("{}")
    return data


def test_a_folder_above_the_dataset_names_the_dataset(dataset: Path) -> None:
    one_error(fleetpulse("metrics", "active_devices", "--data", str(dataset.parent)),
              "holds no dataset", f"--data {dataset}")


def test_a_folder_holding_something_else_is_not_an_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "mosquitto.db").write_bytes(b"")
    one_error(fleetpulse("sql", "SELECT count(*) FROM events", "--data", str(tmp_path)),
              "holds no dataset")


def test_an_empty_folder_is_still_an_empty_dataset(tmp_path: Path) -> None:
    p = fleetpulse("sql", "SELECT count(*) AS n FROM events", "--data", str(tmp_path),
            "--format", "csv")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["n", "0"]


def test_since_after_until(dataset: Path) -> None:
    one_error(fleetpulse("metrics", "active_devices", "--data", str(dataset),
                  "--since", "2026-01-05", "--until", "2026-01-01"),
              "--since 2026-01-05 is after --until 2026-01-01")


def test_the_summary_refuses_the_flags_it_would_ignore(dataset: Path) -> None:
    one_error(fleetpulse("metrics", "--data", str(dataset), "--since", "2026-01-01", "--by", "fw"),
              "--since", "--by", "name a metric")


def test_listing_a_registry_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    one_error(fleetpulse("devices", "list", "--registry", str(missing)), "no device registry",
              str(missing))
    assert not missing.exists()


def test_a_password_without_a_user_name_is_refused(tmp_path: Path) -> None:
    one_error(fleetpulse("ingest", "--broker", "127.0.0.1:1", "--data", str(tmp_path / "d"),
                  "--registry", str(tmp_path / "r"), "--password", "x"),
              "--password needs --username")


def test_configure_refuses_what_the_firmware_would_refuse(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    assert fleetpulse("devices", "add", "cfg-1", "--registry", str(reg)).returncode == 0
    one_error(fleetpulse("devices", "configure", "cfg-1", '{"sample_s": "fast"}', "--registry",
                  str(reg), "--broker", "127.0.0.1:1"),
              "the firmware would refuse these settings", "sample_s must be a positive integer")


def test_configure_of_a_device_the_registry_does_not_know(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    assert fleetpulse("devices", "add", "cfg-1", "--registry", str(reg)).returncode == 0
    one_error(fleetpulse("devices", "configure", "cfg-2", '{"sample_s": 30}', "--registry",
                  str(reg), "--broker", "127.0.0.1:1"),
              "no device cfg-2 in the registry")


def test_a_funnel_step_naming_no_event_is_warned_about(dataset: Path) -> None:
    p = fleetpulse("metrics", "funnel", "--data", str(dataset), "--param", "step3=nosuch_event",
            "--format", "csv")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip()  # the table stands: it is right, just most likely not meant
    (line,) = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert line.startswith("warning: step3: no event 'nosuch_event'") and "feature_used" in line
    ok = fleetpulse("metrics", "funnel", "--data", str(dataset), "--param",
             "step3=feature_used:eco_mode", "--format", "csv")
    assert ok.returncode == 0 and not ok.stderr.strip(), ok.stderr
