# Small JSON files on flash, replaced atomically: write a temporary file, then rename
# over the old one (atomic on LittleFS and POSIX), so a power cut leaves the old or the
# new state, never half of one.
import json
import os


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def ensure_dir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists
