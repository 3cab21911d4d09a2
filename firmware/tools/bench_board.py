"""A board with no hardware: the MicroPython unix port behind a pseudo-terminal, with a
folder as its flash, so mpremote (and `fleetpulse firmware flash`) talk to it as to a
board on USB serial.

The unix port speaks the raw REPL, but it exits where a board resets: on the soft reset
mpremote asks for (Ctrl-D at the raw REPL) and on machine.reset(). So the port mpremote
opens is a second pty, and a relay thread in between starts the interpreter again each
time it exits, the way a board comes back: after a soft reset in the raw REPL it prints
"soft reboot" and is back at the raw REPL without running main.py; after a reset
(machine.reset(), a soft reset at the friendly REPL, the sim board's own resets, or a
power-up) it runs main.py from the flash when there is one, then the REPL (`-i`). What
the interpreter printed is kept, so a failed flash can show the board's last console
lines.

Between the two, the relay does what a board's USB port and MicroPython's REPL do
together. Ctrl-C interrupts a running program: the unix port hears it only as SIGINT, so
the relay sends that, once MicroPython's handler is installed (before that, the signal
would kill the interpreter: a board would have rebooted, not interrupted). Input that
arrives while main.py runs waits until a prompt shows, because the unix port flushes
pending input when its REPL starts, where a board's REPL would read it. `baud` paces
both directions as a serial line of that speed would, so hash skips and transfer sizes
show in timings the way they do on a real board.
"""

from __future__ import annotations

import collections
import os
import pty
import select
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import tty
from pathlib import Path

from .loop import micropython_binary

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
PROMPTS = (b">>> ", RAW_BANNER)
PROMPT_TAIL = max(len(p) for p in PROMPTS)
CONSOLE_LINES = 200
RESET_EXIT = 77  # as the sim board (firmware/hw/sim.py) exits for machine.reset()
# The unix port's own `machine` has no reset(): this one, on the module path after the
# flash, gives mpremote's `reset` (machine.reset()) a board that reboots.
# Said by reset() just before the interpreter exits: from here on input is held for the
# next boot. Without it, what mpremote sends right after a `reset` reached the exiting
# interpreter (still at its raw REPL for a few milliseconds) and was lost with it.
RESET_MARK = b"\x00bench-board-reset\x00"
MACHINE_PY = f"""import sys


def reset():
    sys.stdout.write({RESET_MARK.decode()!r})
    sys.exit({RESET_EXIT})


def soft_reset():
    raise SystemExit


def idle():
    pass


def unique_id():
    return b"bench-board"
"""


class BenchBoard:
    def __init__(self, flash: Path, env: dict[str, str] | None = None,
                 baud: int | None = None) -> None:
        self.flash = flash.resolve()
        self.env = env or {}
        self.baud = baud
        self.boots = 0
        self._console: collections.deque[bytes] = collections.deque(maxlen=CONSOLE_LINES)
        self._partial = b""
        self._proc: subprocess.Popen[bytes] | None = None
        self._child_fd = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._raw = False
        self._at_prompt = False  # the interpreter's REPL has shown a prompt since it booted
        self._tail = b""  # the last output bytes, to find a prompt split across reads
        self._held = bytearray()  # input waiting for a prompt
        self._interrupt = False  # a Ctrl-C waiting for MicroPython's SIGINT handler
        self._lib = Path(tempfile.mkdtemp(prefix="bench-board-"))
        (self._lib / "machine.py").write_text(MACHINE_PY)
        self._user_fd, slave = pty.openpty()
        tty.setraw(slave)  # bytes through untouched, as a USB CDC port carries them
        os.set_blocking(self._user_fd, False)
        self.port = os.ttyname(slave)
        self._slave = slave  # kept open: the port exists while the board does

    def start(self) -> BenchBoard:
        self.flash.mkdir(parents=True, exist_ok=True)
        self._boot(run_main=True)
        self._thread = threading.Thread(target=self._relay, name="bench-board", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> BenchBoard:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def console(self) -> list[str]:
        """The board's last console lines."""
        lines = [*self._console, self._partial] if self._partial else list(self._console)
        return [b.decode("utf-8", "replace").rstrip("\r\n") for b in lines]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._kill()
        for fd in (self._user_fd, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._lib, ignore_errors=True)

    def _boot(self, run_main: bool) -> None:
        """Start the interpreter with the flash as its file system and module path."""
        self.boots += 1
        argv = [micropython_binary()]
        if run_main and (self.flash / "main.py").exists():
            argv += ["-i", "main.py"]
        master, slave = pty.openpty()
        tty.setraw(slave)  # the port writes \r\n itself: no newline translation
        env = {**os.environ, **self.env, "MICROPYPATH": f"{self.flash}:{self._lib}"}
        # SIGINT ignored at start: the unix port runs inside a CPython process, which then
        # installs no handler of its own, so the only SIGINT handler the child ever has is
        # MicroPython's (installed while it runs code), and _catches_sigint() sees it.
        self._proc = subprocess.Popen(argv, cwd=self.flash, env=env, stdin=slave,
                                      stdout=slave, stderr=slave, start_new_session=True,
                                      preexec_fn=_ignore_sigint)
        os.close(slave)
        os.set_blocking(master, False)
        self._child_fd = master
        self._at_prompt = False
        self._tail = b""

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._child_fd >= 0:
            try:
                os.close(self._child_fd)
            except OSError:
                pass
            self._child_fd = -1

    def _relay(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._user_fd, selectors.EVENT_READ, "user")
        sel.register(self._child_fd, selectors.EVENT_READ, "child")
        suppress_until_raw = False
        while not self._stop.is_set():
            self._deliver()
            for key, _ in sel.select(0.02 if self._interrupt else 0.1):
                try:
                    data = os.read(key.fd, 4096)
                except BlockingIOError:
                    continue
                except OSError:  # the interpreter's side closed: it exited
                    data = b""
                if key.data == "user":
                    if data:
                        self._pace(data)
                        self._from_user(data)
                    continue
                if data:
                    if RESET_MARK in data:
                        self._at_prompt, self._tail = False, b""
                        data = data.replace(RESET_MARK, b"")
                    self._saw(data)
                    if suppress_until_raw:
                        # a board back from a soft reset shows only the raw prompt
                        at = data.find(RAW_BANNER)
                        if at < 0:
                            continue
                        data, suppress_until_raw = data[at:], False
                    if RAW_BANNER in data:
                        self._raw = True
                    self._note(data)
                    self._to_user(data)
                    continue
                # the interpreter exited: come back as the board would
                sel.unregister(self._child_fd)
                code = self._proc.wait() if self._proc is not None else 0
                self._kill()
                soft = self._raw and code == 0
                self._to_user(b"soft reboot\r\n" if soft else b"\r\n")
                self._note(b"soft reboot\r\n" if soft else f"(reset, exit {code})\r\n".encode())
                self._boot(run_main=not soft)
                if soft:
                    self._held[:0] = b"\x01"  # straight back to the raw REPL
                    suppress_until_raw = True
                else:
                    self._raw = False
                sel.register(self._child_fd, selectors.EVENT_READ, "child")
        sel.close()

    def _from_user(self, data: bytes) -> None:
        if b"\x02" in data:
            self._raw = False
        if b"\x03" in data:
            if self._catches_sigint():
                self._signal()
                data = data.replace(b"\x03", b"")
            elif not self._at_prompt:
                self._interrupt = True
                data = data.replace(b"\x03", b"")
        self._held += data

    def _deliver(self) -> None:
        """Send held input once the REPL is there to read it, and a pending Ctrl-C once
        MicroPython can take it as KeyboardInterrupt."""
        if self._interrupt:
            if self._at_prompt:
                self._interrupt = False  # the program ended by itself
            elif self._catches_sigint():
                self._signal()
        if self._held and self._at_prompt and self._child_fd >= 0:
            try:
                n = os.write(self._child_fd, self._held)
            except BlockingIOError:
                return
            except OSError:  # exiting: held for the next boot
                return
            del self._held[:n]

    def _signal(self) -> None:
        self._interrupt = False
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGINT)

    def _catches_sigint(self) -> bool:
        if self._proc is None:
            return False
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text()
        except OSError:
            return False
        for line in status.splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
        return False

    def _saw(self, data: bytes) -> None:
        text = self._tail + data
        # a prompt counts only if it ends in the new bytes (the tail is for one split
        # across two reads, not for seeing an old prompt again)
        if any(text.find(p, max(0, len(self._tail) - len(p) + 1)) >= 0 for p in PROMPTS):
            self._at_prompt = True
        self._tail = text[-PROMPT_TAIL:]

    def _to_user(self, data: bytes) -> None:
        """Output to whoever has the port open. Nobody reading for a second: dropped, as
        a board's UART drops what no host takes, rather than stalling the board."""
        self._pace(data)
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._user_fd, view)
            except BlockingIOError:
                if not select.select([], [self._user_fd], [], 1.0)[1]:
                    return
                continue
            except OSError:
                return
            view = view[n:]

    def _pace(self, data: bytes) -> None:
        if self.baud:
            time.sleep(len(data) * 10 / self.baud)  # 8N1: ten bits a byte

    def _note(self, data: bytes) -> None:
        text = self._partial + data
        *lines, self._partial = text.split(b"\n")
        self._console.extend(line + b"\n" for line in lines)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
