from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from fleetpulse.gateway.broker import Broker, free_port
from fleetpulse.ingest.process import IngestProcess

_ids = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One real mosquitto per test session, from the repository's mosquitto.conf."""
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.fail("mosquitto is not installed; `make test` installs it")
    b = Broker(free_port(), tmp_path_factory.mktemp("broker"))
    with b:
        yield b


@pytest.fixture
def start_ingest(broker: Broker, tmp_path: Path) -> Iterator:
    """Start `fleetpulse ingest` processes against the session broker; all killed after."""
    procs: list[IngestProcess] = []

    def start(data: Path | None = None, client_id: str | None = None,
              args: list[str] | None = None) -> IngestProcess:
        p = IngestProcess(
            broker.address, data or tmp_path / "data",
            client_id=client_id or f"ingest-test-{next(_ids)}-{tmp_path.name}"[:60],
            extra_args=["--flush-seconds", "0.3", "--session-expiry", "120", *(args or [])],
            log_path=tmp_path / f"ingest-{len(procs)}.log",
            credentials=ingest_credentials(broker),
        )
        procs.append(p.start())
        return p

    yield start
    for p in procs:
        p.kill()


def ingest_credentials(broker: Broker) -> tuple[str, str]:
    c = broker.credentials("fleetpulse-ingest")
    return c.username, c.password


def fleet_credentials(broker: Broker) -> tuple[str, str]:
    """The simulator's account: it may publish telemetry for any device."""
    c = broker.credentials("fleetpulse-simulator")
    return c.username, c.password


class SyncPublisher:
    """A paho client that publishes at QoS 1 and waits for every PUBACK."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"test-pub-{next(_ids)}")
        self.client.username_pw_set(*fleet_credentials(broker))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes | str | dict) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[SyncPublisher]:
    p = SyncPublisher(broker)
    yield p
    p.close()


class LoadPublisher:
    """Publishes `messages` envelopes of `per_message` readings each, at QoS 1, from a
    background thread, spread over `devices` devices, through the simulator's publisher
    (bounded un-acked messages; paho re-sends what the broker did not acknowledge after
    a reconnect, so a broker restart loses nothing here)."""

    T0 = 1767268800000

    def __init__(self, broker: Broker, messages: int, per_message: int,
                 devices: int = 50, prefix: str = "load") -> None:
        import threading

        from fleetpulse.simulators.publisher import Publisher

        self.messages, self.per_message = messages, per_message
        self.devices, self.prefix = devices, prefix
        self.pub = Publisher(broker.host, broker.port, *fleet_credentials(broker))
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def records(self) -> int:
        return self.messages * self.per_message

    @property
    def acked(self) -> int:
        return self.pub.acked

    def envelope(self, i: int) -> tuple[str, bytes]:
        dev = f"{self.prefix}-{i % self.devices:04d}"
        seq = i // self.devices
        t = self.T0 + seq * 1000
        recs = [{"t": t + k, "type": "reading", "temperature_c": 20.0 + k % 7,
                 "humidity_pct": 40.0} for k in range(self.per_message)]
        env = {"v": 1, "device_id": dev, "boot": 1, "seq": seq, "fw": "1.0", "hw": "load",
               "sent_ms": t, "records": recs}
        return f"devices/{dev}/telemetry", json.dumps(env, separators=(",", ":")).encode()

    def _run(self) -> None:
        for i in range(self.messages):
            self.pub.publish(*self.envelope(i))

    def start(self) -> LoadPublisher:
        self.thread.start()
        return self

    def wait_acked(self, timeout: float) -> None:
        import time

        deadline = time.monotonic() + timeout
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"published {self.pub.sent}/{self.messages}"
        self.pub.drain(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        self.pub.close()


def wait_until(what: str, condition, timeout: float, interval: float = 0.1):
    """Poll condition() until it returns a truthy value; fail with `what` at the deadline."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def dataset_counts(data: Path) -> tuple[int, int, int]:
    """(raw rows, distinct record identities, rows in the deduplicating view) of readings."""
    from fleetpulse.analytics.dataset import connect

    con = connect(data)
    row = con.execute(
        "SELECT (SELECT count(*) FROM readings_raw), "
        "(SELECT count(DISTINCT (device_id, boot, seq, idx)) FROM readings_raw), "
        "(SELECT count(*) FROM readings)").fetchone()
    con.close()
    return row


def fleetpulse(*args: str, cwd: Path | None = None, env: dict | None = None
               ) -> subprocess.CompletedProcess:
    """The console script as a user runs it (wide terminal, so tables do not wrap)."""
    return subprocess.run([sys.executable, "-m", "fleetpulse", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})
