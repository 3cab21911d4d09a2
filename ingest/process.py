"""Run `fleetpulse ingest` as a child process and watch its progress through its stats file.

The demo and the tests both drive ingest this way, as a real separate process that can
be signalled or killed, never as a function call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fleetpulse.errors import UserError

from . import stats


class IngestProcess:
    def __init__(self, broker: str, data_dir: Path | str, client_id: str = "fleetpulse-ingest",
                 extra_args: list[str] | None = None, log_path: Path | None = None,
                 state_dir: Path | None = None,
                 credentials: tuple[str, str] | None = None) -> None:
        self.broker = broker
        self.data = str(data_dir)
        self.data_dir = Path(data_dir)  # meaningful for a local dataset only
        self.state_dir = state_dir
        # ingest keeps its stats file in its state directory, which is the data directory
        # unless the data is in object storage
        self.stats_dir = state_dir or Path(data_dir)
        self.credentials = credentials
        self.client_id = client_id
        self.extra_args = extra_args or []
        self.log_path = log_path or self.stats_dir.parent / f"{client_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> IngestProcess:
        self.stats_dir.mkdir(parents=True, exist_ok=True)
        # A stats file from an earlier run would make the waits below pass too early.
        stats.stats_path(self.stats_dir, self.client_id).unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "fleetpulse", "-v", "ingest",
               "--broker", self.broker, "--data", self.data,
               "--client-id", self.client_id, *self.extra_args]
        if self.state_dir is not None:
            cmd += ["--state-dir", str(self.state_dir)]
        env = dict(os.environ)
        if self.credentials:
            # in the environment, not on a command line that `ps` shows to everyone
            env["FLEETPULSE_MQTT_USERNAME"], env["FLEETPULSE_MQTT_PASSWORD"] = self.credentials
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env)
        return self

    def stats(self) -> dict[str, Any]:
        return stats.read(self.stats_dir, self.client_id) or {}

    def wait_for(self, what: str, condition: Any, timeout: float) -> dict[str, Any]:
        """Poll the stats file until condition(stats) holds; fail with one clear line."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if s and condition(s):
                return s
            if self.proc is not None and self.proc.poll() is not None:
                raise UserError(f"ingest exited with {self.proc.returncode} while waiting until "
                                f"{what}: see {self.log_path}")
            if time.monotonic() > deadline:
                raise UserError(f"ingest did not reach '{what}' within {timeout:.0f}s "
                                f"(stats: {s}); see {self.log_path}")
            time.sleep(0.05)

    def wait_subscribed(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_for("subscribed", lambda s: s.get("subscribed"), timeout)

    def wait_messages(self, n: int, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait_for(f"{n} messages received", lambda s: s.get("messages", 0) >= n,
                             timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (ingest flushes and exits 0); SIGKILL if it does not exit in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
