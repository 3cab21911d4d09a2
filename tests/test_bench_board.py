"""The bench board: the MicroPython unix port behind a pty, which mpremote drives as a
USB board, and which comes back after resets as a board does."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from conftest import wait_until
from mpremote.transport_serial import SerialTransport

from fleetpulse.firmware.bench_board import BenchBoard

MAIN = b"print('main ran')\n"


def test_mpremote_drives_it_like_a_usb_board(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    with BenchBoard(flash) as board:
        t = SerialTransport(board.port, baudrate=115200)
        try:
            # mpremote's own connect: interrupt, raw REPL, soft reset, raw REPL again
            t.enter_raw_repl(soft_reset=True)
            assert board.boots == 2  # the soft reset restarted the interpreter
            assert t.eval("6 * 7") == 42
            t.fs_writefile("main.py", MAIN)
            t.fs_mkdir("lib")
            assert (flash / "main.py").read_bytes() == MAIN  # the folder is its flash
            assert t.fs_hashfile("main.py", "sha256") == hashlib.sha256(MAIN).digest()
            assert {f.name for f in t.fs_listdir()} == {"main.py", "lib"}
            # a soft reset from the friendly REPL boots: main.py runs, then the REPL
            t.exit_raw_repl()
            t.serial.write(b"\x04")
            wait_until("main.py to run", lambda: "main ran" in board.console(), timeout=10)
            t.enter_raw_repl(soft_reset=False)
            assert t.eval("2 + 3") == 5
            assert board.boots == 3
            # a hard reset, as mpremote's `reset` makes it: the board boots, main.py runs
            t.exec_raw_no_follow("import machine; machine.reset()")
            wait_until("a second boot into main.py",
                       lambda: board.console().count("main ran") == 2, timeout=10)
            assert board.boots == 4
        finally:
            t.close()


def test_the_cli_prints_a_port_mpremote_connects_to(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "fleetpulse", "firmware",
                             "bench-board", "--flash", str(tmp_path / "flash")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/"), port
        mpremote = [str(Path(sys.executable).parent / "mpremote"), "connect", port]
        r = subprocess.run([*mpremote, "fs", "cp", str(Path(__file__)), ":copied.py"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "flash" / "copied.py").read_bytes() == Path(__file__).read_bytes()
        # again: mpremote compares hashes on the board and copies nothing
        r = subprocess.run([*mpremote, "fs", "cp", str(Path(__file__)), ":copied.py"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "Up to date" in r.stdout, r.stdout + r.stderr
        # mpremote's hard reset (machine.reset()): the board boots and runs main.py
        (tmp_path / "flash" / "main.py").write_bytes(b"print('main ran after reset')\n")
        r = subprocess.run([*mpremote, "reset"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([*mpremote, "eval", "1 + 1"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "2", r.stdout + r.stderr
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_connecting_interrupts_a_running_program_and_keeps_its_input(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    # a main.py that never returns and never reads the console, as the firmware
    (flash / "main.py").write_bytes(b"import time\nprint('looping')\nwhile True:\n"
                                    b"    time.sleep(0.05)\n")
    with BenchBoard(flash, baud=115200) as board:
        wait_until("main.py to run", lambda: "looping" in board.console(), timeout=10)
        t = SerialTransport(board.port, baudrate=115200)
        try:
            t.enter_raw_repl(soft_reset=False)  # Ctrl-C, then Ctrl-A: must reach the REPL
            assert t.eval("3 * 3") == 9
            assert any("KeyboardInterrupt" in line for line in board.console())
            assert board.boots == 1  # interrupted, not rebooted
        finally:
            t.close()
