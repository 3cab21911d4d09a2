"""Type-check the firmware against the MicroPython stubs of each board with mypy.

The stub packages (micropython-esp32-stubs, micropython-rp2-rpi-pico-w-stubs) both
install top-level modules such as `machine`, so each lives in a folder of its own
(`make` installs them into .venv/stubs/<board>) and replaces mypy's standard library
through --custom-typeshed-dir, since MicroPython's `time`, `socket` or `os` differ from
CPython's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fleetpulse.errors import UserError

from . import BOARDS, FIRMWARE_DIR, board_modules

STUB_PACKAGES = {"esp32": "micropython-esp32-stubs", "rp2": "micropython-rp2-rpi-pico-w-stubs"}
# A few stub modules have errors of their own (names used before they are defined,
# duplicate definitions); mypy would report them as ours.
_CONFIG = """[mypy]
python_version = 3.11
no_site_packages = True
warn_unused_ignores = True
check_untyped_defs = True
[mypy-machine,network,vfs,math,_mpy_shed.*,esp32,rp2]
ignore_errors = True
"""
# hw/__init__ imports every board's module; each is checked only against its own stubs.
_SKIP = "[mypy-{}]\nfollow_imports = skip\nignore_errors = True\n"


def default_stubs_root() -> Path:
    return Path(sys.prefix) / "stubs"


def check(board: str, stubs_root: Path | None = None) -> tuple[bool, str]:
    """Run mypy over `board`'s firmware modules; return (passed, mypy's output)."""
    stubs = (stubs_root or default_stubs_root()) / board
    if not (stubs / "stdlib" / "VERSIONS").exists():
        raise UserError(f"no MicroPython stubs in {stubs}: run `make test` (or pip install "
                        f"--target {stubs} {STUB_PACKAGES[board]})")
    cache = Path(sys.prefix) / "cache" / f"mypy-{board}"
    cfg = cache / "mypy.ini"
    cache.mkdir(parents=True, exist_ok=True)
    others = [f"hw.{b}" for b in BOARDS if b not in (board, "sim")]
    cfg.write_text(_CONFIG + "".join(_SKIP.format(m) for m in others))
    # the sim board is MicroPython too, and must hold to the same stubs
    files = [str(FIRMWARE_DIR / m) for m in (*board_modules(board), *BOARDS["sim"][0])]
    env = dict(os.environ, MYPYPATH=str(stubs))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(cfg), "--cache-dir", str(cache),
         "--custom-typeshed-dir", str(stubs), *files],
        cwd=FIRMWARE_DIR, env=env, capture_output=True, text=True, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()
