# config.json: device identity, WiFi, broker and credentials. Checked once at boot with
# a message per mistake; main.py unloads this module afterwards to give its heap back.
import json

import conf

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


class ConfigError(Exception):
    pass


def load(path="config.json"):
    """(config, None), or (None, one line saying what to fix)."""
    try:
        return _load(path), None
    except ConfigError as e:
        return None, str(e)


def _load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("%s is missing: copy one onto the device "
                          "(mpremote cp config.json :config.json)" % path)
    try:
        cfg = json.loads(text)
    except ValueError:
        raise ConfigError("%s is not valid JSON: fix it and copy it again" % path)
    if not isinstance(cfg, dict):
        raise ConfigError("%s must hold a JSON object" % path)
    claim = cfg.get("claim")
    if claim is not None and (not isinstance(claim, dict) or not isinstance(
            claim.get("id"), str) or not isinstance(claim.get("secret"), str)):
        raise ConfigError("%s: claim must hold id and secret (`fleetpulse devices claim "
                          "create` prints them)" % path)
    dev = cfg.get("device_id")
    if claim is None and (not isinstance(dev, str) or not 0 < len(dev) <= 64 or
                          dev[0] in "_.-" or [c for c in dev if c not in _ID_CHARS]):
        raise ConfigError("%s: device_id must be 1-64 characters of A-Z a-z 0-9 _ . -" % path)
    m = cfg.get("mqtt")
    if not isinstance(m, dict) or not isinstance(m.get("host"), str):
        raise ConfigError("%s: mqtt.host (the broker's address) is missing" % path)
    if not isinstance(m.get("port", 1883), int):
        raise ConfigError("%s: mqtt.port must be a number" % path)
    if claim is None and (not isinstance(m.get("username"), str) or
                          not isinstance(m.get("password"), str)):
        raise ConfigError("%s: mqtt.username and mqtt.password are required "
                          "(fleetpulse devices add prints them)" % path)
    if m.get("tls"):
        ca = m.get("ca")
        if not isinstance(ca, str):
            raise ConfigError("%s: mqtt.ca must name the broker's CA file on the device "
                              "(ca.crt); set mqtt.tls to false only on a trusted LAN" % path)
        try:
            open(ca).close()
        except OSError:
            raise ConfigError("%s is missing: copy the broker's CA onto the device "
                              "(mpremote cp ca.crt :%s)" % (ca, ca))
    w = cfg.get("wifi", {})
    if not isinstance(w, dict) or not isinstance(w.get("ssid", ""), str):
        raise ConfigError("%s: wifi must hold ssid and password" % path)
    err = conf.check_settings(cfg.get("settings", {}))
    if err:
        raise ConfigError("%s: settings: %s" % (path, err))
    return cfg
