"""Serving an update's files to devices over MQTT, chunk by chunk, so no second server
(HTTP, object storage) has to be reachable from a customer's home.

A device asks on devices/<id>/ota/req with "VERSION PATH OFFSET LENGTH" and gets, on
devices/<id>/ota/chunk, "PATH OFFSET SHA256-OF-DATA\\n" followed by the bytes. The device
checks each chunk against its hash and each whole file against the manifest's SHA-256
(firmware/ota.py); it asks again for what does not arrive. Only files a served release's
manifest names are read, so a request cannot reach anything else on this machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from fleetpulse.errors import UserError
from fleetpulse.ingest.contract import is_device_id

log = logging.getLogger("fleetpulse.rollout")
REQUEST_FILTER = "devices/+/ota/req"
CHUNK_TOPIC = "devices/{device_id}/ota/chunk"
MAX_CHUNK = 4096


class Release:
    """A `fleetpulse firmware build` output: its directory and the files it names."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        path = directory / "manifest.json"
        try:
            self.manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{path} cannot be read ({e}): build the release with "
                            "`fleetpulse firmware build --board BOARD --out DIR`") from None
        self.files = {f["path"]: f for f in self.manifest.get("files", [])}

    def chunk(self, path: str, offset: int, length: int) -> bytes | None:
        f = self.files.get(path)
        if f is None or offset < 0 or length <= 0 or offset >= f["bytes"]:
            return None
        with open(self.directory / path, "rb") as fh:
            fh.seek(offset)
            return fh.read(min(length, MAX_CHUNK))


def answer(request: bytes, releases: Callable[[str], Release | None]
           ) -> tuple[str, bytes] | None:
    """(path, chunk message) for a request, or None when it asks for nothing served."""
    try:
        version, path, offset, length = request.decode().split(" ")
        start, size = int(offset), int(length)
    except (UnicodeDecodeError, ValueError):
        return None
    release = releases(version)
    data = None if release is None else release.chunk(path, start, size)
    if data is None:
        return None
    head = f"{path} {start} {hashlib.sha256(data).hexdigest()}\n".encode()
    return path, head + data


class ChunkServer:
    """Answers chunk requests on a connected paho client (in its network thread)."""

    def __init__(self, client: mqtt.Client, releases: Callable[[str], Release | None]) -> None:
        self.client = client
        self.releases = releases
        self.served = 0
        client.message_callback_add(REQUEST_FILTER, self._on_request)
        client.subscribe(REQUEST_FILTER, qos=0)

    def _on_request(self, client: mqtt.Client, _userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) != 4 or not is_device_id(parts[1]):
            return
        out = answer(bytes(message.payload), self.releases)
        if out is None:
            log.debug("chunk request from %s not served: %r", parts[1], message.payload[:80])
            return
        client.publish(CHUNK_TOPIC.format(device_id=parts[1]), out[1], qos=0)
        self.served += 1
