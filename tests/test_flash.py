"""`fleetpulse firmware flash` against bench boards (the MicroPython unix port behind a
pty, driven over mpremote's raw REPL) and the real broker: provisioning, copy with hash
skip, the first report, failures that say where to look, and --all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

from fleetpulse.firmware import board_link, flash, flash_cli
from fleetpulse.firmware.bench_board import BenchBoard
from fleetpulse.firmware.board_link import BoardLink, FlashError
from fleetpulse.firmware.bundle import firmware_version
from fleetpulse.firmware.flash import FlashJob, flash_board
from fleetpulse.firmware.site import load_site
from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.gateway.registry import Registry


def _site(tmp_path: Path, port: int, **extra: object) -> Path:
    site = {"wifi": {"ssid": "bench", "password_env": "BENCH_WIFI"},
            "broker": {"host": "127.0.0.1", "port": port, "tls": False},
            "model": "thermostat-bench", "attributes": {"region": "eu-west"},
            "settings": {"sample_s": 5, "heartbeat_s": 60}, **extra}
    path = tmp_path / "site.json"
    path.write_text(json.dumps(site))
    return path


def _flash(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "BENCH_WIFI": "s3cret-wifi"}
    return subprocess.run([sys.executable, "-m", "fleetpulse", "firmware", "flash",
                           *args], capture_output=True, text=True, env=env, timeout=180)


def test_flash_provisions_copies_and_waits_for_the_first_report(
        broker: Broker, start_ingest, tmp_path: Path) -> None:
    ingest = start_ingest()
    ingest.wait_subscribed()
    site = _site(tmp_path, broker.port)
    common = ["--site", str(site), "--broker", broker.address,
              "--registry", str(broker.registry.dir), "--timeout", "30", "--json"]
    with BenchBoard(tmp_path / "flash", baud=115200) as board:
        r = _flash(["--serial-port", board.port, "--device-id", "bench-0001", *common], tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        first = json.loads(r.stdout)
        assert first["ok"] and first["credentials"] == "added", first
        assert first["firmware"] == firmware_version()
        assert 0 < first["online_s"] <= first["telemetry_s"] < 30
        assert "main.py" in first["copied"] and "config.json" in first["copied"]
        # the device's account is in the registry with the site's model and attributes
        entry = broker.registry.devices()["bench-0001"]
        assert entry["model"] == "thermostat-bench"
        assert entry["attributes"] == {"region": "eu-west"}
        cfg = json.loads((tmp_path / "flash" / "config.json").read_text())
        assert broker.registry.verify("bench-0001", cfg["mqtt"]["password"])
        assert cfg["wifi"]["password"] == "s3cret-wifi" and cfg["hw"] == "thermostat-bench"
        # no secret on stdout or stderr
        assert cfg["mqtt"]["password"] not in r.stdout + r.stderr
        assert "s3cret-wifi" not in r.stdout + r.stderr
        # what the device sent reached the dataset
        from conftest import dataset_counts
        wait_until("the device's first envelope in Parquet",
                   lambda: dataset_counts(tmp_path / "data")[1] > 0, timeout=30)

        # again: everything on the board matches, nothing is copied, the account is kept
        again = _flash(["--serial-port", board.port, "--device-id", "bench-0001", *common],
                       tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        second = json.loads(again.stdout)
        assert second["ok"] and second["copied"] == [] and second["credentials"] == "reused"
        assert second["up_to_date"] == first["up_to_date"] + len(first["copied"])

        # and a stale source file that would shadow a module is removed, as is the
        # pointer of an earlier over-the-air update, which would boot its slot instead
        (tmp_path / "flash" / "app.py").write_text("raise SystemExit\n")
        (tmp_path / "flash" / "ota" / "a").mkdir(parents=True)
        (tmp_path / "flash" / "ota" / "a" / "start.py").write_text("raise SystemExit\n")
        (tmp_path / "flash" / "ota.json").write_text('{"slot": "a", "version": "0.9"}')
        third = _flash(["--serial-port", board.port, "--device-id", "bench-0001", *common],
                       tmp_path)
        assert third.returncode == 0 and json.loads(third.stdout)["ok"], third.stderr
        assert json.loads(third.stdout)["firmware"] == firmware_version()
        assert not (tmp_path / "flash" / "app.py").exists()
        assert not (tmp_path / "flash" / "ota.json").exists()


def test_a_board_that_never_reaches_the_broker_says_where_to_look(
        broker: Broker, tmp_path: Path) -> None:
    dead = free_port()
    site = _site(tmp_path, dead)  # nothing listens there: the device cannot connect
    with BenchBoard(tmp_path / "flash") as board:
        r = _flash(["--serial-port", board.port, "--device-id", "lost-0001", "--site", str(site),
                    "--broker", broker.address, "--registry", str(broker.registry.dir),
                    "--timeout", "6"], tmp_path)
        assert r.returncode == 1
        assert r.stdout.startswith("FAILED ") and "no `online` from lost-0001" in r.stdout
        assert "WiFi" in r.stdout and f"127.0.0.1:{dead}" in r.stdout
        # the board's own words about it, from its console
        assert "last console lines" in r.stderr and "offline (" in r.stderr, r.stderr
        # the device is registered and its config works: a second run keeps the account
        cfg = json.loads((tmp_path / "flash" / "config.json").read_text())
        assert broker.registry.verify("lost-0001", cfg["mqtt"]["password"])
        r2 = _flash(["--serial-port", board.port, "--device-id", "lost-0001", "--site", str(site),
                     "--broker", broker.address, "--registry", str(broker.registry.dir),
                     "--timeout", "1", "--json"], tmp_path)
        assert json.loads(r2.stdout)["credentials"] == "reused"


def _flash_in_process(broker: Broker, reg: Registry, tmp_path: Path,
                      device_id: str) -> flash.FlashResult:
    with BenchBoard(tmp_path / "flash") as board:
        job = FlashJob(port=board.port, device_id=device_id,
                       site=load_site(_site(tmp_path, broker.port)), registry=reg,
                       broker=(broker.host, broker.port), auth=(None, None),
                       cache=tmp_path / "cache")
        return flash_board(job, lambda *_: None)


def test_a_copy_that_fails_puts_the_registry_back(broker: Broker, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_WIFI", "w")
    reg = Registry(tmp_path / "registry").init()

    def cut_cable(self: BoardLink, path: str, data: bytes, sha256: str) -> None:
        raise FlashError("copying app.mpy failed (cable pulled)")

    monkeypatch.setattr(BoardLink, "put", cut_cable)
    res = _flash_in_process(broker, reg, tmp_path, "cut-0001")
    assert not res.ok and res.verdict.startswith("copy: copying app.mpy failed"), res.verdict
    assert "cut-0001" not in reg.devices()  # no account left that no board holds
    assert "cut-0001" not in (reg.dir / "passwd").read_text()


def test_an_id_registered_to_another_board_is_refused_without_rotate(
        broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_WIFI", "w")
    reg = Registry(tmp_path / "registry").init()
    creds = reg.add("taken-0001")
    res = _flash_in_process(broker, reg, tmp_path, "taken-0001")
    assert not res.ok and "pass --rotate" in res.verdict, res.verdict
    assert reg.verify("taken-0001", creds.password)  # the other board still gets in


def test_all_attached_boards_concurrently_with_ids_from_their_serials(
        broker: Broker, start_ingest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BENCH_WIFI", "w")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    boards = [BenchBoard(tmp_path / f"flash{i}").start() for i in range(4)]
    try:
        # USB enumeration is the hardware edge: the four ptys stand in for four boards
        attached = [(b.port, f"SN{i:03}") for i, b in enumerate(boards)]
        # (flash_cli imports it from board_link when it runs, so one patch serves both)
        monkeypatch.setattr(board_link, "attached_ports", lambda: attached)
        from fleetpulse.cli import build_parser

        args = build_parser().parse_args([
            "firmware", "flash", "--all", "--id-template", "hub-{serial}",
            "--site", str(_site(tmp_path, broker.port)), "--broker", broker.address,
            "--registry", str(broker.registry.dir), "--timeout", "30", "--json"])
        assert flash_cli.run_flash(args) == 0
        results = json.loads(capsys.readouterr().out)
        assert sorted(r["device_id"] for r in results) == [f"hub-SN{i:03}" for i in range(4)]
        assert all(r["ok"] for r in results), results
        # concurrently: the four boards' flashing overlapped in time
        spans = [(r["started_at"], r["ended_at"]) for r in results]
        assert max(s for s, _ in spans) < min(e for _, e in spans)
    finally:
        for b in boards:
            b.stop()


def test_runtime_refusals_say_what_to_install() -> None:
    old = board_link.BoardInfo("esp32", (1, 19, 1), 6 | (10 << 10), "")
    with pytest.raises(FlashError, match=r"MicroPython 1\.19\.1 .*1\.23 or newer.*--runtime"):
        board_link.check_runtime(old, None)
    new = board_link.BoardInfo("rp2", (1, 28, 0), 6 | (3 << 8) | (4 << 10), "")
    assert board_link.check_runtime(new, None) == "rp2" and new.arch == "armv6m"
    with pytest.raises(FlashError, match="--board esp32 but the board runs MicroPython for rp2"):
        board_link.check_runtime(new, "esp32")
    with pytest.raises(FlashError, match="'zephyr'"):
        board_link.check_runtime(board_link.BoardInfo("zephyr", (1, 28, 0), 6 | 3 << 8, ""),
                                 None)
    assert flash.STEPS[0] == "runtime"
