# The runtime settings (sampling, batching, features, experiments) that config.json
# starts and the retained config topic changes. config.json itself is checked by
# configfile.py, which is unloaded after boot.

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
