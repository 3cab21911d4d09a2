from __future__ import annotations

import itertools
import json
import shutil
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
        )
        procs.append(p.start())
        return p

    yield start
    for p in procs:
        p.kill()


class SyncPublisher:
    """A paho client that publishes at QoS 1 and waits for every PUBACK."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"test-pub-{next(_ids)}")
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
