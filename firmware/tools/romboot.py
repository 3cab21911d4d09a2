# mypy: ignore-errors
# MicroPython code (the unix port), not CPython: the sim board's stand-in for what a board
# with a ROM partition does before main.py runs. Such a board maps the partition into
# its address space and mounts it at /rom, so bytecode runs from flash. The unix port has
# no such memory, so the image is read into one heap block first, and its size is printed
# so that heap figures can leave out what a board keeps in flash.
import gc
import os
import sys

import vfs

gc.collect()
_before = gc.mem_alloc()
with open(os.getenv("FLEETPULSE_ROMFS"), "rb") as _f:
    ROM = _f.read()
gc.collect()
print("sim: ROMFS image mounted at /rom, %d bytes of heap here (flash on a board)"
      % (gc.mem_alloc() - _before))
vfs.mount(vfs.VfsRom(ROM), "/rom")
# as on a board: the filesystem root first (main.py, config.json), then the ROM
sys.path[:] = ["", "/rom", "/rom/lib"]
import main  # noqa: E402, F401
