"""Start and stop a Mosquitto broker from the repository's mosquitto.conf.

The port, persistence directory and user are set at launch by rendering a copy of the
file into the data directory; the repository's file is never edited.
"""

from __future__ import annotations

import getpass
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF = REPO_ROOT / "mosquitto.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_conf(conf_text: str, port: int, data_dir: Path) -> str:
    """The config with the plain listener's port, persistence dir and user replaced."""
    out = []
    replaced_listener = False
    for line in conf_text.splitlines():
        words = line.split()
        if words[:1] == ["listener"] and not replaced_listener:
            # The first listener is the plain one; later ones (TLS) keep their ports.
            line = re.sub(r"^(\s*listener\s+)\d+", rf"\g<1>{port}", line)
            replaced_listener = True
        elif words[:1] == ["persistence_location"]:
            line = f"persistence_location {data_dir}/"
        elif words[:1] == ["user"]:
            line = f"user {getpass.getuser()}"
        out.append(line)
    if not replaced_listener:
        out.append(f"listener {port} 127.0.0.1")
    return "\n".join(out) + "\n"


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """A mosquitto process; use as a context manager or call start()/stop()."""

    def __init__(self, port: int, data_dir: Path, conf: Path = DEFAULT_CONF) -> None:
        self.port = port
        self.host = "127.0.0.1"
        self.data_dir = data_dir.resolve()
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Broker:
        exe = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
            None,
        )
        if exe is None:
            raise UserError(
                "mosquitto is not installed: run `make demo` or apt-get install mosquitto"
            )
        if not self.conf.exists():
            raise UserError(f"broker config {self.conf} not found")
        if _accepts(self.host, self.port):
            raise UserError(f"port {self.port} is already in use: choose another with --port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        rendered = self.data_dir / "mosquitto.conf"
        rendered.write_text(render_conf(self.conf.read_text(), self.port, self.data_dir))
        log = open(self.data_dir / "mosquitto.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [exe, "-c", str(rendered)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for us reaches it only through stop()
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            if self.proc.poll() is not None:
                raise UserError(f"mosquitto exited at start: {self._last_log_line()}")
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(f"mosquitto did not accept connections on port {self.port} "
                                f"within {timeout:.0f}s: see {self.data_dir / 'mosquitto.log'}")
            time.sleep(0.02)
        return self

    def _last_log_line(self) -> str:
        lines = (self.data_dir / "mosquitto.log").read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
