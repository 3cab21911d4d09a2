# config.json (device identity, WiFi, broker, credentials) and the runtime settings
# (sampling, batching, features, experiments) that the retained config topic can change.
import json

# Settings and their defaults; the retained devices/<id>/config message may change any
# of them, and config.json may set their starting values under "settings".
DEFAULTS = {
    "sample_s": 60,  # environment reading interval
    "flush_s": 300,  # longest a record waits in RAM before it is sent
    "batch_records": 32,  # records per envelope at most (envelopes also stop near 1 KiB)
    "heartbeat_s": 3600,
    "session_idle_s": 300,  # a usage session ends after this long without input
    "window": 4,  # QoS 1 messages in flight at once
    "journal_kb": 64,  # offline journal bound on flash
    "low_power": False,  # sample, publish or journal, deep sleep
    "sleep_s": 300,  # deep sleep length in low-power mode
    "publish_every": 6,  # in low-power mode, connect every Nth wake
    "buttons": {"eco": "eco_mode"},  # button -> feature it uses
    "features": {},  # feature -> enabled (absent = enabled)
    "experiments": {},  # key -> "A" | "B" | share of B (0..1), assigned by hash
}
_INTS = ("sample_s", "flush_s", "batch_records", "heartbeat_s", "session_idle_s", "window",
         "journal_kb", "sleep_s", "publish_every")
_DICTS = ("buttons", "features", "experiments")
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


class ConfigError(Exception):
    pass


def load(path="config.json"):
    """Read and check config.json; raise ConfigError with one line saying what to fix."""
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
    dev = cfg.get("device_id")
    if not isinstance(dev, str) or not 0 < len(dev) <= 64 or dev[0] in "_.-" or [
            c for c in dev if c not in _ID_CHARS]:
        raise ConfigError("%s: device_id must be 1-64 characters of A-Z a-z 0-9 _ . -" % path)
    m = cfg.get("mqtt")
    if not isinstance(m, dict) or not isinstance(m.get("host"), str):
        raise ConfigError("%s: mqtt.host (the broker's address) is missing" % path)
    if not isinstance(m.get("port", 1883), int):
        raise ConfigError("%s: mqtt.port must be a number" % path)
    if not isinstance(m.get("username"), str) or not isinstance(m.get("password"), str):
        raise ConfigError("%s: mqtt.username and mqtt.password are required "
                          "(fleetpulse devices add prints them)" % path)
    w = cfg.get("wifi", {})
    if not isinstance(w, dict) or not isinstance(w.get("ssid", ""), str):
        raise ConfigError("%s: wifi must hold ssid and password" % path)
    err = check_settings(cfg.get("settings", {}))
    if err:
        raise ConfigError("%s: settings: %s" % (path, err))
    return cfg


def check_settings(new):
    """None when every known key has a usable value, else what is wrong."""
    if not isinstance(new, dict):
        return "must be a JSON object"
    for k, v in new.items():
        if k in _INTS and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            return "%s must be a positive integer" % k
        if k in _DICTS and not isinstance(v, dict):
            return "%s must be an object" % k
        if k == "low_power" and not isinstance(v, bool):
            return "low_power must be true or false"
    return None


def merged(*layers):
    out = dict(DEFAULTS)
    for layer in layers:
        if isinstance(layer, dict):
            for k, v in layer.items():
                if k in DEFAULTS:
                    out[k] = v
    return out
