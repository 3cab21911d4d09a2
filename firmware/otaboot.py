# Boot-time choice of the firmware to run: the modules on the flash root (as flashed), or
# an update installed into ota/a or ota/b (ota.py), whose directory then goes first on
# sys.path so its modules shadow the root's. Never updated itself: it is the part that
# must work whatever an update holds.
#
# ota.json (replaced whole by a rename, so a power cut leaves the old or the new one):
#   {"slot": "b", "version": "1.7.0", "prev_slot": null, "prev_version": "1.6.0",
#    "trial": true, "boots": 0}
# A version on trial that boots a second time without having confirmed itself (it
# crashed, the watchdog reset it, or its trial window ran out) is rolled back here:
# the pointer goes back to the previous slot before any of its code runs, and the version
# is remembered as failed, so the retained update message does not install it again.
import json
import os
import sys

POINTER = "ota.json"


def _read():
    try:
        with open(POINTER) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write(p):
    with open(POINTER + ".tmp", "w") as f:
        json.dump(p, f)
    os.rename(POINTER + ".tmp", POINTER)


def select():
    p = _read()
    if not p or not p.get("slot"):
        return
    if p.get("trial"):
        if p.get("boots", 0) >= 1:
            print("fleetpulse: %s did not confirm itself; rolling back to %s" % (
                p.get("version"), p.get("prev_version")))
            p = {"slot": p.get("prev_slot"), "version": p.get("prev_version"),
                 "trial": False, "rolled_back": p.get("version"),
                 "failed": (p.get("failed", []) + [p.get("version")])[-4:]}
            _write(p)
            if not p["slot"]:
                return
        else:
            p["boots"] = 1
            _write(p)
    sys.path.insert(0, "ota/" + p["slot"])


select()
