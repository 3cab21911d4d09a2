"""Writing the MicroPython runtime the user brings (never downloaded): an ESP32 .bin
through esptool's Python API, a Pico W .uf2 onto the RP2's BOOTSEL drive (or with
picotool when it is installed). The checks that need no hardware (which chip an image is
for, which family a UF2 is for, where the image goes) are plain functions."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from .board_link import BoardLink, FlashError

ESP_IMAGE_MAGIC = 0xE9
# UF2 (github.com/microsoft/uf2): 512-byte blocks, these magics, family id in word 7
UF2_MAGICS = (0x0A324655, 0x9E5D5157, 0x0AB16F30)
UF2_FAMILY_FLAG = 0x2000
RP2_FAMILIES = {
    0xE48BFF56: "RPI-RP2",  # RP2040 (Pico, Pico W)
    0xE48BFF57: "RP2350", 0xE48BFF59: "RP2350", 0xE48BFF5A: "RP2350",  # Pico 2 (W)
}
PORT_BACK_S = 30.0  # a board re-enumerates on USB within this after its runtime changes


def write_runtime(image: Path, port: str, board: str | None) -> None:
    try:
        data = image.read_bytes()
    except OSError as e:
        raise FlashError(f"cannot read --runtime {image}: {e.strerror}") from None
    if image.suffix == ".uf2":
        if board not in (None, "rp2"):
            raise FlashError(f"{image.name} is a UF2 image (RP2 boards); --board is {board}")
        write_uf2(image, data, port)
    elif image.suffix == ".bin":
        if board not in (None, "esp32"):
            raise FlashError(f"{image.name} is an ESP32 image; --board is {board}")
        write_esp32(data, port)
    else:
        raise FlashError(f"--runtime {image.name}: expected a .bin (ESP32) or a .uf2 "
                         "(Pico W), as micropython.org/download offers them")
    _wait_for_port(port)


# -- ESP32 --------------------------------------------------------------------------------

def check_esp_image(data: bytes, chip_name: str, chip_image_id: int) -> None:
    """A MicroPython .bin for ESP32 starts with the bootloader's image header, whose
    extended header names the chip it was built for (esptool's IMAGE_CHIP_ID)."""
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        raise FlashError("the --runtime file is not an ESP32 firmware image (no 0xE9 "
                         "header): use the .bin from micropython.org/download for the board")
    image_chip = struct.unpack_from("<H", data, 12)[0]
    if image_chip != chip_image_id:
        raise FlashError(f"the --runtime image is built for another chip (image chip id "
                         f"{image_chip}) than the board's {chip_name} (id {chip_image_id}): "
                         f"download the {chip_name} build")


def esp_offset(chip: object) -> int:
    """Where a combined MicroPython image goes: where the chip's ROM looks for the
    bootloader (0x1000 on ESP32 and ESP32-S2, 0x0 on S3 and C3, ...)."""
    return int(getattr(chip, "BOOTLOADER_FLASH_OFFSET"))


def write_esp32(data: bytes, port: str) -> None:
    from esptool import cmds

    try:
        # esptool logs its progress to stdout; our stdout is for results
        with contextlib.redirect_stdout(sys.stderr):
            esp = cmds.detect_chip(port)
            try:
                check_esp_image(data, esp.CHIP_NAME, esp.IMAGE_CHIP_ID)
                esp = cmds.run_stub(esp)
                cmds.attach_flash(esp)
                cmds.erase_flash(esp)  # an old filesystem must not survive a new runtime
                cmds.write_flash(esp, [(esp_offset(esp), data)])  # verifies what it wrote
                cmds.reset_chip(esp, "hard-reset")
            finally:
                esp._port.close()
    except FlashError:
        raise
    except Exception as e:  # esptool's FatalError and serial errors: one line each
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".:")
        raise FlashError(f"esptool could not write the runtime on {port} ({first}): hold the "
                         "board's BOOT button while it connects, or check the cable") from None


# -- RP2 ------------------------------------------------------------------------------------

def uf2_family(data: bytes) -> int:
    """The family id of a UF2 image (all blocks must agree), or FlashError."""
    if len(data) < 512 or len(data) % 512:
        raise FlashError("the --runtime file is not a UF2 image (not 512-byte blocks)")
    families = set()
    for off in range(0, len(data), 512):
        m0, m1, flags, *_, family = struct.unpack_from("<8I", data, off)
        (end,) = struct.unpack_from("<I", data, off + 508)
        if (m0, m1, end) != UF2_MAGICS:
            raise FlashError(f"the --runtime file is not a UF2 image (bad block at byte {off})")
        if flags & UF2_FAMILY_FLAG:
            families.add(family)
    rp2 = families & set(RP2_FAMILIES)
    if not rp2:
        raise FlashError("the --runtime UF2 is not for an RP2 board (no RP2040/RP2350 "
                         "family id): use the Pico W build from micropython.org/download")
    return min(rp2)


def bootsel_drives() -> dict[Path, str]:
    """Mounted BOOTSEL drives and their Board-ID (INFO_UF2.TXT), from /proc/mounts."""
    found: dict[Path, str] = {}
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in mounts:
        fields = line.split()
        if len(fields) < 2:
            continue
        info = Path(fields[1].replace("\\040", " ")) / "INFO_UF2.TXT"
        try:
            text = info.read_text(errors="replace")
        except OSError:
            continue
        for row in text.splitlines():
            if row.startswith("Board-ID:"):
                found[info.parent] = row.split(":", 1)[1].strip()
    return found


def write_uf2(image: Path, data: bytes, port: str) -> None:
    family = uf2_family(data)
    if shutil.which("picotool"):
        # -f reboots a board running MicroPython into BOOTSEL itself; -x runs the result
        r = subprocess.run(["picotool", "load", "-x", "-f", str(image)], capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["failed"]
            raise FlashError(f"picotool could not load {image.name}: {last[0]}")
        return
    drives = _matching_drives(family)
    if not drives:
        _enter_bootsel(port)
        end = time.monotonic() + 20
        while not drives and time.monotonic() < end:
            time.sleep(0.25)
            drives = _matching_drives(family)
    if not drives:
        raise FlashError(f"no {RP2_FAMILIES[family]} BOOTSEL drive appeared: hold BOOTSEL "
                         "while plugging the board in, and check the drive is mounted")
    if len(drives) > 1:
        raise FlashError(f"{len(drives)} BOOTSEL drives are mounted: flash runtimes one "
                         "board at a time")
    # The drive takes the file and reboots the board when the last block lands.
    shutil.copyfile(image, drives[0] / image.name)


def _matching_drives(family: int) -> list[Path]:
    want = RP2_FAMILIES[family]
    return [d for d, board_id in bootsel_drives().items() if board_id.startswith(want)]


def _enter_bootsel(port: str) -> None:
    """A board already running MicroPython reboots into BOOTSEL on request."""
    try:
        link = BoardLink(port)
    except FlashError:
        return  # no runtime to ask: the user holds BOOTSEL instead
    try:
        link.exec_no_follow("import machine\nmachine.bootloader()")
    finally:
        link.close()


def _wait_for_port(port: str) -> None:
    """Until the board's port is back; the connect step then waits for its REPL (a new
    runtime formats its filesystem first)."""
    end = time.monotonic() + PORT_BACK_S
    while not Path(port).exists():
        if time.monotonic() > end:
            raise FlashError(f"{port} did not come back within {PORT_BACK_S:.0f} s of "
                             "writing the runtime: replug the board and run the command "
                             "again without --runtime")
        time.sleep(0.25)
