"""The site file: what every board flashed for one place has in common (WiFi, the broker
as devices see it, its CA, the hardware model, attributes, starting settings), so the
command line carries no secrets. A password is either in the file (which can be mode
0600) or, with "password_env", read from the named environment variable.

    {"wifi": {"ssid": "plant-3", "password_env": "PLANT3_WIFI"},
     "broker": {"host": "10.0.0.5", "port": 8883, "ca": "ca.crt"},
     "model": "thermostat-esp32",
     "attributes": {"region": "eu-west", "customer": "acme"},
     "settings": {"sample_s": 60}}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetpulse.errors import UserError

CA_ON_BOARD = "ca.crt"  # where config.json tells the firmware to find the broker's CA


@dataclass
class Site:
    path: Path
    ssid: str
    wifi_password: str
    host: str
    port: int
    ca: Path | None  # None: plain MQTT (a trusted LAN or a test)
    model: str | None
    attributes: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def device_config(self, device_id: str, password: str) -> dict[str, Any]:
        """The device's config.json."""
        mqtt: dict[str, Any] = {"host": self.host, "port": self.port, "username": device_id,
                                "password": password, "tls": self.ca is not None}
        if self.ca is not None:
            mqtt["ca"] = CA_ON_BOARD
        cfg: dict[str, Any] = {"device_id": device_id,
                               "wifi": {"ssid": self.ssid, "password": self.wifi_password},
                               "mqtt": mqtt}
        if self.model:
            cfg["hw"] = self.model
        if self.settings:
            cfg["settings"] = self.settings
        return cfg


def load_site(path: Path) -> Site:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no site file {path}: write one (see firmware/README.md, "
                        "'The site file')") from None
    except ValueError as e:
        raise UserError(f"site file {path} is not JSON ({e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"site file {path} must hold a JSON object")
    wifi = _section(raw, "wifi", path)
    broker = _section(raw, "broker", path)
    host = broker.get("host")
    if not isinstance(host, str) or not host:
        raise UserError(f"site file {path}: broker.host (the broker's address as devices "
                        "see it) is missing")
    tls = broker.get("tls", "ca" in broker)
    port = broker.get("port", 8883 if tls else 1883)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise UserError(f"site file {path}: broker.port must be a port number")
    ca: Path | None = None
    if tls:
        if not isinstance(broker.get("ca"), str):
            raise UserError(f"site file {path}: broker.ca must name the broker's CA file "
                            "(`fleetpulse gateway certs` writes ca.crt), or set "
                            "broker.tls to false on a trusted LAN")
        ca = (path.parent / broker["ca"]).resolve()
        if not ca.is_file():
            raise UserError(f"site file {path}: broker.ca {ca} does not exist")
    ssid = wifi.get("ssid", "")
    if not isinstance(ssid, str):
        raise UserError(f"site file {path}: wifi.ssid must be a string")
    attributes = raw.get("attributes", {})
    if not isinstance(attributes, dict) or not all(
            isinstance(v, str) for v in attributes.values()):
        raise UserError(f"site file {path}: attributes must map names to strings")
    settings = raw.get("settings", {})
    if not isinstance(settings, dict):
        raise UserError(f"site file {path}: settings must be a JSON object")
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        raise UserError(f"site file {path}: model must be a string")
    return Site(path=path, ssid=ssid, wifi_password=_password(wifi, "wifi", path),
                host=host, port=port, ca=ca, model=model, attributes=attributes,
                settings=settings)


def _section(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise UserError(f"site file {path}: {name} must be a JSON object")
    return value


def _password(section: dict[str, Any], name: str, path: Path) -> str:
    if "password_env" in section:
        var = section["password_env"]
        value = os.environ.get(var) if isinstance(var, str) else None
        if value is None:
            raise UserError(f"site file {path}: {name}.password_env names ${var}, which is "
                            "not set: export it before flashing")
        return value
    value = section.get("password", "")
    if not isinstance(value, str):
        raise UserError(f"site file {path}: {name}.password must be a string")
    return value
