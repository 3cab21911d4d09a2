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

from fleetpulse.errors import UserError
from fleetpulse.files import raise_open_files_limit

from .certs import ensure_certs
from .registry import Credentials, Registry

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF = REPO_ROOT / "mosquitto.conf"


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has installed a SIGTERM handler (Linux: SigCgt in its status;
    elsewhere assumed)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    caught = next((line.split()[1] for line in status.splitlines()
                   if line.startswith("SigCgt:")), None)
    return caught is None or bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_conf(conf_text: str, ports: list[int], data_dir: Path, registry: Path,
                certs: Path) -> str:
    """The config with launch-time values: listener ports in order (plain, TLS), the
    persistence directory, the user, and the registry's and certificates' paths."""
    paths = {
        "persistence_location": f"{data_dir}/",
        "user": getpass.getuser(),
        "password_file": str(registry / "passwd"),
        "acl_file": str(registry / "acl"),
        "cafile": str(certs / "ca.crt"),
        "certfile": str(certs / "server.crt"),
        "keyfile": str(certs / "server.key"),
    }
    out = []
    listeners = iter(ports)
    for line in conf_text.splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            line = re.sub(r"^(\s*listener\s+)\d+", rf"\g<1>{next(listeners)}", line)
        elif words and words[0] in paths:
            line = f"{words[0]} {paths[words[0]]}"
        out.append(line)
    return "\n".join(out) + "\n"


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """A mosquitto process; use as a context manager or call start()/stop().

    Its registry (accounts, ACL) defaults to DATA/registry and its TLS certificates to
    DATA/certs; both are created on first start."""

    def __init__(self, port: int, data_dir: Path, conf: Path = DEFAULT_CONF,
                 tls_port: int | None = None, registry: Path | None = None,
                 certs: Path | None = None) -> None:
        self.port = port
        self.tls_port = tls_port or free_port()
        self.host = "127.0.0.1"
        self.data_dir = data_dir.resolve()
        self.conf = conf
        self.registry = Registry(registry or self.data_dir / "registry")
        self.certs = (certs or self.data_dir / "certs").resolve()
        self.proc: subprocess.Popen[bytes] | None = None

    def credentials(self, service: str) -> Credentials:
        return self.registry.service(service)

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
        if _accepts(self.host, self.tls_port):
            raise UserError(f"port {self.tls_port} is already in use: choose another with "
                            "--tls-port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.registry.init()
        ensure_certs(self.certs)
        rendered = self.data_dir / "mosquitto.conf"
        rendered.write_text(render_conf(self.conf.read_text(), [self.port, self.tls_port],
                                        self.data_dir, self.registry.dir, self.certs))
        log = open(self.data_dir / "mosquitto.log", "ab")  # noqa: SIM115 - handed to the child
        # a connection per device: mosquitto inherits the open-files limit
        raise_open_files_limit()
        self.proc = subprocess.Popen(
            [exe, "-c", str(rendered)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for us reaches it only through stop()
        )
        log.close()
        self.registry.pid_path.write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        # Ready once it accepts connections and has its SIGTERM handler: mosquitto opens
        # its listeners before it installs the handler, so a stop() in between killed it
        # unsaved (exit -15; seen once in make test).
        while not (_accepts(self.host, self.port) and _handles_sigterm(self.proc.pid)):
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
        self.registry.pid_path.unlink(missing_ok=True)
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
