"""QoS 1 publishing through one paho-mqtt client, for tests and benchmarks that load a
broker from a thread (`fleetpulse simulate` uses mqtt_publisher.Publisher).

paho's network thread does the socket work while the caller generates envelopes; a
bounded number of un-acknowledged messages keeps memory flat, and `drain()` returns
only when the broker has acknowledged every message.
"""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt

from fleetpulse.errors import UserError

MAX_UNACKED = 5000


class Publisher:
    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None) -> None:
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"fleetpulse-sim-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if username:
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 5)  # back within seconds of a broker restart
        self._client.on_publish = self._on_publish
        self._cond = threading.Condition()
        self.sent = 0
        self.acked = 0
        refused: list[str] = []
        connected = threading.Event()

        def on_connect(client: mqtt.Client, userdata: object, flags: object, rc: object,
                       props: object) -> None:
            if getattr(rc, "is_failure", False):
                refused.append(str(rc))
            connected.set()

        self._client.on_connect = on_connect
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as e:
            raise UserError(
                f"cannot reach the broker at {host}:{port} ({e}): is it running?"
            ) from None
        self._client.loop_start()
        if not connected.wait(10) or refused:
            self.close()
            raise UserError(f"the broker at {host}:{port} refused the connection "
                            f"({refused[0] if refused else 'no answer'}): check --username "
                            "and --password, or --registry")

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int,
                    reason: object, props: object) -> None:
        with self._cond:
            self.acked += 1
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        with self._cond:
            while self.sent - self.acked >= MAX_UNACKED:
                self._cond.wait(1.0)
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise UserError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self.sent += 1

    def drain(self, timeout: float = 120.0) -> None:
        """Wait until the broker acknowledged everything sent."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.acked < self.sent:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UserError(f"broker acknowledged only {self.acked} of {self.sent} "
                                    f"messages within {timeout:.0f}s")
                self._cond.wait(min(left, 1.0))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
