"""The hand-written MQTT 5 subscriber's packet parsing, and its session against the real
broker."""

from __future__ import annotations

import asyncio

import paho.mqtt.client as mqtt
import pytest
from mqttpackets import publish_packet

from fleetpulse.ingest.mqtt_subscriber import (
    MqttConnectError,
    Subscriber,
    parse_packets,
    puback_packets,
)


def test_parses_qos0_qos1_properties_and_large_payloads() -> None:
    big = b"x" * 20000  # remaining length needs three varint bytes
    buf = bytearray(
        publish_packet("devices/a/telemetry", b"one", 1, pid=7)
        + publish_packet("devices/b/telemetry", b"two", 0)
        + publish_packet("devices/c/telemetry", big, 1, pid=65535, props=b"\x01\x01", dup=True)
        + b"\xd0\x00"  # PINGRESP
    )
    pubs, others, used = parse_packets(buf)
    assert used == len(buf)
    assert [(p.topic, p.payload, p.packet_id, p.dup) for p in pubs] == [
        ("devices/a/telemetry", b"one", 7, False),
        ("devices/b/telemetry", b"two", 0, False),
        ("devices/c/telemetry", big, 65535, True),
    ]
    assert others == [(13, b"")]


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 20, 30])
def test_a_packet_split_across_reads_waits_for_the_rest(cut: int) -> None:
    whole = publish_packet("devices/a/telemetry", b"payload" * 5, 1, pid=3)
    first = publish_packet("devices/z/telemetry", b"z", 1, pid=1)
    buf = bytearray(first + whole[:cut])
    pubs, _, used = parse_packets(buf)
    assert [p.packet_id for p in pubs] == [1] and used == len(first)
    del buf[:used]
    buf += whole[cut:]
    pubs, _, used = parse_packets(buf)
    assert [p.payload for p in pubs] == [b"payload" * 5] and used == len(whole)


def test_batches_are_bounded() -> None:
    one = publish_packet("devices/a/telemetry", b"p" * 1000, 1, pid=1)
    buf = bytearray(one * 100)
    pubs, _, used = parse_packets(buf, max_bytes=10 * len(one))
    assert len(pubs) == 10 and used == 10 * len(one)


def test_pubacks() -> None:
    assert puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"


async def test_session_against_mosquitto(broker) -> None:
    ing = broker.credentials("fleetpulse-ingest")
    sub = Subscriber(broker.host, broker.port, "unit-sub", session_expiry=60,
                     username=ing.username, password=ing.password)
    await sub.connect()
    await sub.subscribe("devices/+/telemetry", qos=1)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    fleet = broker.credentials("fleetpulse-simulator")
    pub.username_pw_set(fleet.username, fleet.password)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for i in range(50):
        pub.publish(f"devices/u{i % 3}/telemetry", f"m{i}", qos=1 if i % 2 else 0
                    ).wait_for_publish(5)
    got = []
    while len(got) < 50:
        batch = await asyncio.wait_for(sub.read_batch(), 5)
        sub.ack([p.packet_id for p in batch if p.packet_id])
        got += [p.payload for p in batch]
    assert sorted(got) == sorted(f"m{i}".encode() for i in range(50))
    await sub.close()
    pub.disconnect()
    pub.loop_stop()


async def test_refused_connection_is_a_clear_error(broker) -> None:
    sub = Subscriber(broker.host, broker.port, "unit-refused", username="nobody",
                     password="wrong")
    # a protocol level the broker does not know
    sub._connect = sub._connect.replace(b"\x04MQTT\x05", b"\x04MQTT\x09")
    with pytest.raises(MqttConnectError, match="unacceptable protocol version"):
        await sub.connect()
