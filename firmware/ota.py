# Over-the-air updates (docs/ota.md), as a state machine the application drives:
#   idle -> staging (manifest on devices/<id>/update: files fetched chunk by chunk over
#   MQTT into the other slot, each chunk checked, each file checked by SHA-256, progress
#   on flash so a reboot or a lost connection resumes where it stopped) -> applied (the
#   pointer ota.json written last, the board reset into the new version on trial) ->
#   confirmed (connected and a heartbeat acknowledged within the trial window) or rolled
#   back (otaboot.py, at the next boot, when it was not).
# Loaded only while there is something to do, so a device that is not updating keeps
# its heap.
import binascii
import hashlib
import json
import os

import time

import flash

POINTER = "ota.json"
STAGE = "ota/stage.json"
CHUNK = 1024  # a Pico W keeps one chunk and its hash in RAM at a time
ASK_AGAIN_MS = 5000  # a chunk not answered by then is asked for again
TRIAL_MS = 600000  # a version on trial confirms itself within this, or is rolled back


def log(msg):
    print("fleetpulse: " + msg)


def pointer():
    return flash.read_json(POINTER) or {}


def _sha256_file(path):
    h = hashlib.sha256()
    buf = bytearray(256)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(buf[:n])
    return binascii.hexlify(h.digest()).decode()


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _dirs_for(path):
    parts = path.split("/")[:-1]
    at = ""
    for p in parts:
        at = at + "/" + p if at else p
        flash.ensure_dir(at)


class Updater:
    def __init__(self, app, running):
        self.app = app
        self.running = running  # FW_VERSION
        self.stage = flash.read_json(STAGE)
        self.asked_at = None  # ticks of the outstanding chunk request
        self.refused = 0

    # -- messages ---------------------------------------------------------------------
    def on_update(self, payload):
        try:
            m = json.loads(payload)
            version = m["version"]
        except (ValueError, KeyError, TypeError):
            log("update message is not a manifest; ignored")
            return
        if m.get("rollback"):
            return self.roll_back_to(version)
        if version == self.running:
            return
        if version in pointer().get("failed", ()):
            return  # rolled back once already: a new release needs a new version
        if self.stage and self.stage["version"] == version:
            return  # staging it already (a retained message again after a reconnect)
        files = m.get("files")
        if not isinstance(files, list) or not files:
            log("update %s names no files; ignored" % version)
            return
        here = pointer().get("slot")
        slot = "b" if here == "a" else "a"
        self.stage = {"version": version, "slot": slot, "i": 0,
                      "files": [[f["path"], f["bytes"], f["sha256"]] for f in files]}
        flash.ensure_dir("ota")
        flash.ensure_dir("ota/" + slot)
        flash.write_json(STAGE, self.stage)
        self.app.event("update_started", name=version, value=self.running)
        log("update %s: staging %d files into ota/%s" % (version, len(files), slot))

    def on_chunk(self, payload):
        st = self.stage
        if st is None:
            return
        head_end = payload.find(b"\n")
        try:
            path, offset, digest = payload[:head_end].decode().split(" ")
            offset = int(offset)
        except ValueError:
            return
        f = st["files"][st["i"]]
        target = "ota/%s/%s.part" % (st["slot"], f[0])
        if path != f[0] or offset != _size(target):
            return  # an answer to an earlier request: the current one is still due
        data = payload[head_end + 1:]
        if binascii.hexlify(hashlib.sha256(data).digest()).decode() != digest:
            self.refused += 1
            log("update chunk %s@%d refused: its hash does not match" % (path, offset))
            self.asked_at = None  # ask again now
            return
        with open(target, "ab") as out:
            out.write(data)
        self.asked_at = None
        if _size(target) >= f[1]:
            self.file_done(target, f)

    def file_done(self, target, f):
        st = self.stage
        if _size(target) != f[1] or _sha256_file(target) != f[2]:
            log("update file %s does not match its SHA-256; fetching it again" % f[0])
            _remove(target)
            return
        final = target[:-5]
        _remove(final)
        os.rename(target, final)
        st["i"] += 1
        flash.write_json(STAGE, st)
        if st["i"] == len(st["files"]):
            self.apply()

    # -- steps ------------------------------------------------------------------------
    def tick(self, client, topic, now):
        """Ask for the next chunk when none is outstanding (or it went unanswered)."""
        st = self.stage
        if st is None or client is None:
            return
        if self.asked_at is not None and time.ticks_diff(now, self.asked_at) < ASK_AGAIN_MS:
            return
        path, size, _ = st["files"][st["i"]]
        target = "ota/%s/%s.part" % (st["slot"], path)
        _dirs_for(target)
        got = _size(target)
        if got >= size:  # complete before a reboot cut the check short
            return self.file_done(target, st["files"][st["i"]])
        client.publish(topic, "%s %s %d %d" % (st["version"], path, got,
                                               min(CHUNK, size - got)))
        self.asked_at = now

    def apply(self):
        """Every file is staged and checked: point the next boot at it, on trial."""
        st = self.stage
        p = pointer()
        flash.write_json(POINTER, {
            "slot": st["slot"], "version": st["version"], "prev_slot": p.get("slot"),
            "prev_version": self.running, "trial": True, "boots": 0,
            "failed": p.get("failed", [])})
        _remove(STAGE)
        self.stage = None
        log("update %s staged: restarting into it" % st["version"])
        self.app.restart("update")

    def roll_back_to(self, version):
        """The server sends the previous version back: boot it, if it is the one kept."""
        p = pointer()
        if version == self.running:
            return
        if p.get("prev_version") != version:
            log("rollback to %s asked, which this device does not keep; ignored"
                         % version)
            return
        flash.write_json(POINTER, {"slot": p.get("prev_slot"), "version": version,
                                   "trial": False, "rolled_back": self.running,
                                   "failed": (p.get("failed", []) + [self.running])[-4:]})
        log("rolling back to %s" % version)
        self.app.restart("update")


def boot_events(app, running):
    """What this boot reports about updates: a rollback (otaboot.py's, or the server's),
    or a version on trial that has just been applied. Returns True while on trial."""
    p = pointer()
    if not p:
        return False
    if p.get("rolled_back"):
        app.event("update_rolled_back", name=running, value=p["rolled_back"])
        del p["rolled_back"]
        flash.write_json(POINTER, p)
        return False
    if p.get("trial") and not p.get("applied"):
        app.event("update_applied", name=running, value=p.get("prev_version"))
        p["applied"] = True
        flash.write_json(POINTER, p)
    return bool(p.get("trial"))


def confirm(app, running):
    p = pointer()
    p["trial"] = False
    p.pop("boots", None)
    p.pop("applied", None)
    flash.write_json(POINTER, p)
    app.event("update_confirmed", name=running, value=p.get("prev_version"))
    log("update %s confirmed" % running)


def trial_expired(app):
    """Not confirmed within the window: reset; otaboot.py rolls it back."""
    log("update not confirmed within %d s: restarting to roll back" % (TRIAL_MS // 1000))
    app.restart("software_reset")
