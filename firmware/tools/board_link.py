"""A board on a serial port, through mpremote's transport (the library, not its CLI):
what runtime it has, which files it holds (by SHA-256, one round trip for all), writing
files so a half-written one is never taken for whole, and the reset that boots it."""

from __future__ import annotations

import ast
import collections
import threading
import time
from dataclasses import dataclass

import serial
import serial.tools.list_ports
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from fleetpulse.errors import UserError

CHUNK = 1024  # bytes per write into the board's file; small enough for a Pico W's heap
# sys.platform -> the firmware's board
PLATFORM_BOARD = {"esp32": "esp32", "rp2": "rp2", "linux": "sim"}
# sys.implementation._mpy >> 10 -> mpy-cross -march name (py/persistentcode.h)
ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
         "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc")
MPY_VERSION = (6, 3)  # what mpy-cross 1.23 and newer emit, and the firmware is built with
MIN_RUNTIME = (1, 23)

INFO = """import sys
try:
    import binascii, machine
    _u = binascii.hexlify(machine.unique_id()).decode()
except Exception:
    _u = ''
print(repr((sys.platform, tuple(sys.implementation.version[:3]),
            getattr(sys.implementation, '_mpy', 0), _u)))
"""

# Runs on the board: the SHA-256 of each path (None where there is no file), so deciding
# what to copy costs one round trip, however many files the bundle has.
HASHES = """import binascii, hashlib
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(memoryview(b)[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(repr([_h(p) for p in %r]))
"""


class FlashError(Exception):
    """A step failed on this board; the message says what to do."""


@dataclass(frozen=True)
class BoardInfo:
    platform: str
    version: tuple[int, ...]
    mpy: int  # sys.implementation._mpy: version, sub-version and native architecture
    unique_id: str

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def arch(self) -> str | None:
        code = self.mpy >> 10
        return ARCHS[code] if code < len(ARCHS) else None


def check_runtime(info: BoardInfo, wanted: str | None) -> str:
    """The firmware board for this runtime, or FlashError saying what to install."""
    board = PLATFORM_BOARD.get(info.platform)
    if board is None:
        raise FlashError(f"the board runs MicroPython for {info.platform!r}; the firmware "
                         f"runs on {', '.join(sorted(set(PLATFORM_BOARD)))}")
    if wanted and wanted != board:
        raise FlashError(f"--board {wanted} but the board runs MicroPython for "
                         f"{info.platform}: pass --board {board}, or flash a {wanted} runtime "
                         "with --runtime FILE")
    mpy = (info.mpy & 0xFF, (info.mpy >> 8) & 3)
    if info.version[:2] < MIN_RUNTIME or mpy != MPY_VERSION:
        raise FlashError(f"the board runs MicroPython {info.version_text} (mpy "
                         f"v{mpy[0]}.{mpy[1]}); the firmware needs {MIN_RUNTIME[0]}."
                         f"{MIN_RUNTIME[1]} or newer (mpy v{MPY_VERSION[0]}.{MPY_VERSION[1]}): "
                         f"flash one with --runtime FILE (a .bin for ESP32 or .uf2 for Pico W "
                         "from micropython.org/download)")
    return board


class BoardLink:
    """One open connection to a board in its raw REPL."""

    def __init__(self, port: str) -> None:
        self.port = port
        try:
            self._t = SerialTransport(port, baudrate=115200)
        except TransportError as e:
            raise FlashError(f"cannot open {port} ({e}): is the board plugged in, and is "
                             "another program (a serial console, mpremote) holding it?") from None
        try:
            # interrupts whatever runs, then a soft reset: a clean heap for the copy
            self._t.enter_raw_repl(soft_reset=True)
        except (TransportError, serial.SerialException, OSError) as e:
            self._t.close()
            raise FlashError(f"{port} does not answer as a MicroPython REPL ({e}): flash a "
                             "runtime with --runtime FILE, or press the board's reset "
                             "button and try again") from None

    def close(self) -> None:
        try:
            self._t.close()
        except (OSError, serial.SerialException):
            pass

    def _exec(self, code: str) -> bytes:
        try:
            return self._t.exec(code)
        except (TransportError, serial.SerialException, OSError) as e:
            raise FlashError(f"the board on {self.port} stopped answering ({e}): check the "
                             "cable and run the command again") from None

    def info(self) -> BoardInfo:
        platform, version, mpy, uid = ast.literal_eval(self._exec(INFO).decode())
        return BoardInfo(platform, tuple(version), mpy, uid)

    def sha256s(self, paths: list[str]) -> list[str | None]:
        return ast.literal_eval(self._exec(HASHES % (paths,)).decode())

    def read(self, path: str) -> bytes | None:
        if self.sha256s([path])[0] is None:
            return None
        try:
            return self._t.fs_readfile(path, chunk_size=CHUNK)
        except (TransportError, serial.SerialException, OSError) as e:
            raise FlashError(f"cannot read {path} from the board ({e})") from None

    def put(self, path: str, data: bytes, sha256: str) -> None:
        """Write `path` under a temporary name, check it by reading its hash back, then
        rename it into place: a cut cable leaves the old file or the new, never half."""
        parts = path.split("/")[:-1]
        dirs = ["/".join(parts[:i + 1]) for i in range(len(parts))]
        tmp = path + ".part"
        self._exec("import os\n"
                   f"for d in {dirs!r}:\n"
                   "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n")
        try:
            self._t.fs_writefile(tmp, data, chunk_size=CHUNK)
        except (TransportError, serial.SerialException, OSError) as e:
            raise FlashError(f"copying {path} failed ({e}): check the cable and run the "
                             "command again (what was copied is kept)") from None
        got = self.sha256s([tmp])[0]
        if got != sha256:
            raise FlashError(f"{path} read back with a different SHA-256: the board's flash "
                             "may be full or failing (mpremote df shows its space)")
        self._exec(f"import os\nos.rename({tmp!r}, {path!r})")

    def remove(self, path: str) -> None:
        self._exec(f"import os\ntry:\n    os.remove({path!r})\nexcept OSError:\n    pass\n")

    def exec_no_follow(self, code: str) -> None:
        """Run code that ends the connection (a reset, the bootloader)."""
        try:
            self._t.exec_raw_no_follow(code)
        except (TransportError, serial.SerialException, OSError):
            pass  # the line may be cut before the command is acknowledged

    def reset(self) -> None:
        """A hard reset: the board boots and runs main.py. The connection ends with it
        (on a board with native USB the port itself goes away for a moment)."""
        self.exec_no_follow("import machine\nmachine.reset()")
        self.close()


class ConsoleTail:
    """The board's console after a reset, reopened as soon as the port is back, so a
    board that does not report can show what it printed."""

    def __init__(self, port: str, lines: int = 40) -> None:
        self.port = port
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._partial = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"console {port}", daemon=True)

    def start(self) -> ConsoleTail:
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(2)
        tail = [*self._lines]
        if self._partial.strip():
            tail.append(self._partial.decode("utf-8", "replace"))
        return [line.rstrip("\r") for line in tail]

    def _run(self) -> None:
        while not self._stop.is_set():
            s = serial.Serial()
            s.port, s.baudrate, s.timeout = self.port, 115200, 0.2
            # DTR/RTS left low: on ESP32 boards they drive EN and GPIO0, and opening
            # the port with both high would reset the board again
            s.dtr = s.rts = False
            try:
                s.open()
            except (serial.SerialException, OSError):
                time.sleep(0.1)  # the port is not back yet after the reset
                continue
            try:
                while not self._stop.is_set():
                    data = s.read(4096)
                    if data:
                        *done, self._partial = (self._partial + data).split(b"\n")
                        self._lines.extend(d.decode("utf-8", "replace") for d in done)
            except (serial.SerialException, OSError):
                pass
            finally:
                s.close()


def attached_ports() -> list[tuple[str, str | None]]:
    """USB serial ports with a board on them, as mpremote's `auto` sees them: (device,
    USB serial number)."""
    return [(p.device, p.serial_number) for p in sorted(serial.tools.list_ports.comports())
            if p.vid is not None and p.pid is not None]


def resolve_port(port: str) -> str:
    if port != "auto":
        return port
    found = attached_ports()
    if not found:
        raise UserError("no board found on USB (mpremote's `auto`): plug one in, or pass "
                        "--serial-port PORT (`mpremote connect list` shows the ports)")
    return found[0][0]
