"""`firmware flash --runtime FILE`: the checks and placement that need no chip (which chip
an ESP image is for and where it goes, per esptool's own chip classes; which family a UF2
is for; the BOOTSEL drive), with the drive a folder (the hardware edge)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from esptool.targets import CHIP_DEFS

from fleetpulse.firmware import runtime
from fleetpulse.firmware.board_link import FlashError
from fleetpulse.firmware.runtime import (
    check_esp_image,
    esp_offset,
    uf2_family,
    write_runtime,
)

RP2040 = 0xE48BFF56
RP2350_ARM = 0xE48BFF59


def uf2(family: int, blocks: int = 3, flags: int = 0x2000) -> bytes:
    out = b""
    for n in range(blocks):
        head = struct.pack("<8I", 0x0A324655, 0x9E5D5157, flags, 0x10000000 + 256 * n, 256,
                           n, blocks, family)
        out += head + bytes(476) + struct.pack("<I", 0x0AB16F30)
    return out


def esp_image(chip_id: int) -> bytes:
    return bytes([0xE9, 3, 2, 0x20]) + bytes(8) + struct.pack("<H", chip_id) + bytes(100)


def test_esp_images_go_where_each_chip_boots_and_must_match_the_chip() -> None:
    # MicroPython's download pages: ESP32 and ESP32-S2 at 0x1000, S3 and C3 at 0x0
    assert esp_offset(CHIP_DEFS["esp32"]) == 0x1000
    assert esp_offset(CHIP_DEFS["esp32s2"]) == 0x1000
    assert esp_offset(CHIP_DEFS["esp32s3"]) == 0x0
    assert esp_offset(CHIP_DEFS["esp32c3"]) == 0x0
    s3 = CHIP_DEFS["esp32s3"]
    check_esp_image(esp_image(s3.IMAGE_CHIP_ID), s3.CHIP_NAME, s3.IMAGE_CHIP_ID)
    with pytest.raises(FlashError, match=r"another chip .* ESP32-S3"):
        check_esp_image(esp_image(CHIP_DEFS["esp32"].IMAGE_CHIP_ID), s3.CHIP_NAME,
                        s3.IMAGE_CHIP_ID)
    with pytest.raises(FlashError, match="not an ESP32 firmware image"):
        check_esp_image(b"PK\x03\x04" + bytes(40), s3.CHIP_NAME, s3.IMAGE_CHIP_ID)


def test_uf2_family_is_read_and_non_rp2_images_are_refused() -> None:
    assert uf2_family(uf2(RP2040)) == RP2040
    assert uf2_family(uf2(RP2350_ARM)) == RP2350_ARM
    with pytest.raises(FlashError, match="not for an RP2 board"):
        uf2_family(uf2(0x1C5F21B0))  # ESP32 family id
    with pytest.raises(FlashError, match="not a UF2 image"):
        uf2_family(uf2(RP2040)[:-1])
    broken = bytearray(uf2(RP2040))
    broken[512] = 0
    with pytest.raises(FlashError, match="bad block at byte 512"):
        uf2_family(bytes(broken))


def test_a_uf2_lands_on_the_matching_bootsel_drive(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pico, pico2 = tmp_path / "RPI-RP2", tmp_path / "RP2350"
    for d, board_id in ((pico, "RPI-RP2"), (pico2, "RP2350")):
        d.mkdir()
        (d / "INFO_UF2.TXT").write_text(f"UF2 Bootloader v3.0\nModel: x\nBoard-ID: {board_id}\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sdb1 {pico} vfat rw 0 0\n/dev/sdc1 {pico2} vfat rw 0 0\n"
                      "proc /proc proc rw 0 0\n")
    real_path = runtime.Path
    monkeypatch.setattr(runtime, "Path",
                        lambda p: real_path(mounts) if p == "/proc/mounts" else real_path(p))
    assert runtime.bootsel_drives() == {pico: "RPI-RP2", pico2: "RP2350"}
    monkeypatch.setattr(runtime.shutil, "which", lambda _: None)  # no picotool here
    monkeypatch.setattr(runtime, "_wait_for_port", lambda _: None)
    image = tmp_path / "RPI_PICO_W-v1.28.0.uf2"
    image.write_bytes(uf2(RP2040))
    write_runtime(image, "/dev/ttyACM0", "rp2")
    assert (pico / image.name).read_bytes() == image.read_bytes()
    assert not (pico2 / image.name).exists()  # a Pico 2's drive never gets a Pico image


def test_runtime_files_of_the_wrong_kind_are_refused(tmp_path: Path) -> None:
    hexfile = tmp_path / "firmware.hex"
    hexfile.write_text(":00000001FF\n")
    with pytest.raises(FlashError, match=r"expected a \.bin \(ESP32\) or a \.uf2"):
        write_runtime(hexfile, "/dev/ttyACM0", None)
    image = tmp_path / "pico.uf2"
    image.write_bytes(uf2(RP2040))
    with pytest.raises(FlashError, match=r"UF2 image .*--board is esp32"):
        write_runtime(image, "/dev/ttyUSB0", "esp32")
    with pytest.raises(FlashError, match="cannot read --runtime"):
        write_runtime(tmp_path / "missing.bin", "/dev/ttyUSB0", None)


def test_esptool_on_a_board_that_is_no_esp32_fails_in_one_line(tmp_path: Path) -> None:
    from fleetpulse.firmware.bench_board import BenchBoard
    from fleetpulse.firmware.runtime import write_esp32

    # a MicroPython REPL, not an ESP ROM bootloader
    with BenchBoard(tmp_path / "flash") as board, pytest.raises(FlashError) as e:
        write_esp32(esp_image(0), board.port)
    assert "\n" not in str(e.value) and "hold the board's BOOT button" in str(e.value)
