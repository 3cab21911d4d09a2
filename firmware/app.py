# The application: sample, record usage, batch into contract-v1 envelopes, publish at
# QoS 1 or journal on flash, take config from the retained config topic, and keep the
# watchdog fed. Everything board-specific is behind the board object (hw/).
import binascii
import hashlib
import json
import os
import random
import time

import buffers
import conf
import flash
import resetnote
from clock import Clock
from journal import Journal
from mqtt import Client, MQTTError, tls_context
from version import FW_VERSION

STATE = "state.json"
SETTINGS = "settings.json"
# not "journal": on a board the filesystem root comes first on sys.path, and a directory
# named like a module is imported in its place (found running from ROMFS)
JOURNAL_DIR = "outbox"
OTA_POINTER = "ota.json"  # otaboot.py and ota.py: a version installed by an update
OTA_STAGE = "ota/stage.json"  # ota.py: an update being staged
ENVELOPE_BYTES = 900  # stop a batch here: with the envelope fields it stays near 1 KiB
UNTIMED_BYTES = 100  # size estimate of a record kept unserialised until it has a time
SEP = (",", ":")
TICK_MS = 100  # inputs are polled at least this often
WDT_MS = 30000
BACKOFF_MIN_MS = 1000
BACKOFF_MAX_MS = 60000
RESYNC_MS = 6 * 3600 * 1000
DRAIN_MS = 30000  # at the end of a scenario, how long to wait for acks


def log(msg):
    print("fleetpulse: " + msg)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def variant(key, device_id, share_b):
    """Experiment assignment, the same function as the server's (docs/experiments.md)."""
    digest = hashlib.sha256(("%s:%s" % (key, device_id)).encode()).digest()
    bucket = int(binascii.hexlify(digest)[:8], 16) % 10000
    return "B" if bucket < share_b * 10000 else "A"


class App:
    def __init__(self, board, cfg):
        self.b = board
        self.cfg = cfg
        self.dev = cfg["device_id"]
        self.hw = cfg.get("hw") or board.hw
        self.state = flash.read_json(STATE, {})
        self.boot = self.state.get("boot", -1) + 1
        self.state["boot"] = self.boot
        # Install id: made once, kept beside the boot counter. An erased flash loses both,
        # and the new id keeps the restarted (boot, seq) from looking like old messages.
        if not self.state.get("iid"):
            self.state["iid"] = binascii.hexlify(os.urandom(8)).decode()
        self.dropped = self.state.get("dropped", 0)
        flash.write_json(STATE, self.state)
        self.settings = conf.merged(cfg.get("settings"), flash.read_json(SETTINGS))
        self.clock = Clock(board)
        self.journal = Journal(JOURNAL_DIR, self.settings["journal_kb"] * 1024,
                               buffers.READ)
        self.seq = 0
        self.batch = []
        self.batch_bytes = 0
        self.batch_up = 0
        self.inflight = {}  # packet id -> journal token
        # envelopes are built in a buffer allocated at boot, never in a fresh allocation
        self.buf = buffers.ENVELOPE
        self.client = None
        self.tls = None  # SSLContext, built at the first TLS connect
        self.connects = 0
        self.backoff = BACKOFF_MIN_MS
        self.next_connect = 0
        self.down_since = None
        self.synced_up = None
        self.session_up = None  # uptime of the last input while a session is open
        self.next_sample = 0
        self.cause, self.last_error = resetnote.take(board.reset_cause())
        # the envelope fields that never change, serialised once
        self.ident = ('"device_id":%s,"iid":"%s","fw":%s,"hw":%s,' % (
            json.dumps(self.dev), self.state["iid"], json.dumps(FW_VERSION),
            json.dumps(self.hw))).encode()
        base = "devices/" + self.dev
        self.t_telemetry = base + "/telemetry"
        self.t_status = base + "/status"
        self.t_config = base + "/config"
        self.t_update = base + "/update"
        self.t_chunk = base + "/ota/chunk"
        self.t_ask = base + "/ota/req"
        self.updater = None  # ota.Updater while an update is being staged
        self.trial_since = None  # uptime this boot of a version on trial began
        self.trial_hb = False  # its heartbeat is made (confirmed once acknowledged)
        if _exists(OTA_STAGE):  # staging resumes where a reboot cut it off
            self.updating()

    # -- records ----------------------------------------------------------------------
    def record(self, rec):
        # A timed record is serialised at once: a few small strings fit in a fragmented
        # heap, where one envelope-sized json.dumps at flush time may not.
        t = self.clock.now()
        if t is None:
            rec["u"] = self.clock.up()
            item = rec  # serialised when it can be placed in time
            size = UNTIMED_BYTES
        else:
            rec["t"] = t
            item = json.dumps(rec, separators=SEP).encode()
            size = len(item)
        if not self.batch:
            self.batch_up = self.clock.up()
        self.batch.append(item)
        self.batch_bytes += size + 1

    def event(self, kind, **fields):
        # not "name": setting_changed events carry a field of that name
        fields["type"] = "event"
        fields["event"] = kind
        self.record(fields)

    def sample(self):
        env = self.b.read_environment()
        if env is None:
            return
        env["type"] = "reading"
        rssi = self.b.rssi()
        if rssi is not None:
            env["rssi_dbm"] = rssi
        self.record(env)

    def on_input(self, button):
        if self.session_up is None:
            self.event("session_start")
        self.session_up = self.clock.up()
        self.event("button_press", button=button)
        feature = self.settings["buttons"].get(button)
        if feature and self.settings["features"].get(feature, True):
            self.event("feature_used", feature=feature)

    def heartbeat(self):
        self.event("heartbeat", uptime_s=self.clock.up() // 1000, reconnects=max(0, self.connects - 1),
                   free_mem=self.b.free_mem(), reset_cause=self.cause,
                   records_dropped=self.dropped, interval_s=self.settings["heartbeat_s"])
        self.count_dropped(-self.dropped)

    def count_dropped(self, n):
        if n:
            self.dropped += n
            self.state["dropped"] = self.dropped
            flash.write_json(STATE, self.state)

    # -- envelopes --------------------------------------------------------------------
    def flush(self):
        self.send(self.close_batch())

    def close_batch(self):
        """Close the batch into an envelope line with the next sequence number; from
        here on its identity (boot, seq) never changes, whether it is sent now or later."""
        recs = self.batch
        self.batch = []
        self.batch_bytes = 0
        self.seq += 1
        return self.encode(self.boot, self.seq - 1, recs)

    def encode(self, boot, seq, recs):
        """The journal line "<T|U><n> <envelope JSON>", written into the buffer
        allocated at boot; returns a view of it, valid until the next encode. Records
        still carrying uptime are placed in time if the clock is known now; if it is
        not, the line is U and they stay as they are."""
        now = self.clock.now()
        buf = self.buf
        n = 0
        parts = [("%s%d " % ("U" if now is None else "T", len(recs))).encode(), b'{"v":1,',
                 self.ident,
                 ('"boot":%d,"seq":%d,"sent_ms":%d,"records":[' % (boot, seq, now or 0)).encode()]
        for i, r in enumerate(recs):
            if i:
                parts.append(b",")
            if not isinstance(r, bytes):
                if now is not None and "u" in r:
                    r["t"] = self.clock.at(r.pop("u"))
                r = json.dumps(r, separators=SEP).encode()
            parts.append(r)
        parts.append(b"]}")
        for p in parts:
            if n + len(p) > len(buf):
                raise ValueError("envelope over %d bytes" % len(buf))
            buf[n:n + len(p)] = p
            n += len(p)
        return memoryview(buf)[:n]

    def send(self, line):
        """Journal first: every closed envelope is on flash before it is published, so a
        reboot loses nothing that was closed, and a lost connection needs no copies in
        RAM (what was not acknowledged is read again from the journal)."""
        self.count_dropped(self.journal.append(line))
        if self.client is not None:
            try:
                self.drain()
            except OSError as e:
                self.lost(e)

    def publish(self, line, token):
        c = self.client
        assert c is not None
        start = 0
        while line[start] != 32:  # the payload is the line after its "T<n> " prefix
            start += 1
        self.inflight[c.publish(self.t_telemetry, line[start + 1:], qos=1)] = token

    def on_puback(self, pid):
        token = self.inflight.pop(pid, None)
        if token is not None:
            self.journal.ack(token)

    def drain(self):
        while len(self.inflight) < self.settings["window"]:
            item = self.journal.next()
            if item is None:
                return
            line, token = item
            if line[0] == 85:  # "U": records still carry uptime
                text = bytes(line)
                env = json.loads(text[text.index(b" ") + 1:])
                if env["boot"] != self.boot:
                    # The clock was never known during that boot, so its records cannot
                    # be placed in time: counted as dropped, not sent with made-up times.
                    self.count_dropped(len(env["records"]))
                    self.journal.ack(token)
                    continue
                line = self.encode(env["boot"], env["seq"], env["records"])
                if line[0] == 85:  # the clock is still unknown: try again later
                    self.journal.rewind()
                    return
            self.publish(line, token)

    # -- connection -------------------------------------------------------------------
    def connect(self):
        m = self.cfg["mqtt"]
        w = self.cfg.get("wifi", {})
        if not self.b.wlan_connect(w.get("ssid", ""), w.get("password", "")):
            raise OSError("WiFi is not connected")
        up = self.clock.up()
        if self.synced_up is None or up - self.synced_up > RESYNC_MS:
            t = self.b.sync_time()
            if t is not None:
                self.clock.set(t)
                self.synced_up = up
        tls = None
        if m.get("tls"):
            if self.tls is None:  # parsed once: mbedTLS keeps the CA in the context
                self.tls = tls_context(m["ca"])
            tls = self.tls
        c = Client(self.dev, m["host"], m.get("port", 8883 if tls else 1883), m["username"],
                   m["password"], keepalive=m.get("keepalive", 60), tls=tls,
                   ticks=self.b.ticks_ms)
        c.on_puback = self.on_puback
        c.on_message = self.on_message
        c.connect(self.t_status, b"offline")
        self.client = c
        c.subscribe(self.t_config, 1)
        c.subscribe(self.t_update, 1)
        c.subscribe(self.t_chunk, 0)
        c.publish(self.t_status, b"online", qos=1, retain=True)
        self.connects += 1
        self.backoff = BACKOFF_MIN_MS
        if self.down_since is not None:
            log("connected again after %d s" % ((up - self.down_since) // 1000))
        else:
            log("connected to %s:%d as %s (boot %d)" % (m["host"], c.port, self.dev, self.boot))
        self.down_since = None

    def lost(self, err):
        """The connection is gone: what was not acknowledged is read again from the
        journal after the next connect."""
        if self.client is not None:
            self.client.close()
        self.client = None
        self.inflight = {}
        self.journal.rewind()
        self.retry_later(err)

    def retry_later(self, err):
        up = self.clock.up()
        if self.down_since is None:
            self.down_since = up
            log("offline (%s); journaling and retrying" % err)
        # exponential backoff with jitter, so a fleet does not reconnect in lockstep
        self.next_connect = up + self.backoff // 2 + random.getrandbits(16) % (self.backoff // 2 + 1)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_MS)

    def network(self):
        if self.client is None:
            if self.clock.up() < self.next_connect:
                return
            try:
                self.connect()
            except MQTTError as e:
                self.retry_later(e)
                return
            except OSError as e:
                self.retry_later(e)
                return
        c = self.client
        if c is None:
            return
        try:
            if not self.b.wlan_up():
                raise OSError("WiFi lost")
            c.check()
            self.drain()
            if self.updater is not None:
                self.updater.tick(c, self.t_ask, self.b.ticks_ms())
        except OSError as e:
            self.lost(e)

    # -- updates (ota.py, loaded only when there is one) -------------------------------
    def updating(self):
        if self.updater is None:
            import ota
            self.updater = ota.Updater(self, FW_VERSION)
        return self.updater

    def trial(self):
        """A version on trial confirms itself once connected with a heartbeat
        acknowledged, or restarts to be rolled back when the window runs out."""
        import ota
        if self.client is not None and not self.trial_hb:
            self.heartbeat()
            self.trial_hb = True
            self.flush()
        elif (self.trial_hb and not self.batch and not self.inflight
              and self.journal.empty() and self.client is not None):
            ota.confirm(self, FW_VERSION)
            self.trial_since = None
        elif time.ticks_diff(self.b.ticks_ms(), self.trial_since) > ota.TRIAL_MS:
            ota.trial_expired(self)

    def restart(self, cause):
        """Reset the board (what is batched goes to the journal first); the next boot
        reports `cause` as its reset cause."""
        self.flush_to_journal()
        resetnote.note(cause)
        self.b.reset()

    def on_message(self, topic, payload):
        if topic == self.t_update:
            self.updating().on_update(payload)
            return
        if topic == self.t_chunk:
            if self.updater is not None:
                self.updater.on_chunk(payload)
            return
        if topic != self.t_config:
            return
        try:
            new = json.loads(payload)
        except ValueError:
            log("config message is not JSON; ignored")
            return
        err = conf.check_settings(new)
        if err:
            log("config message ignored: " + err)
            return
        self.apply(new)

    def apply(self, new):
        """Apply settings at once, persist them, report each change as setting_changed."""
        changed = False
        for k, v in new.items():
            if k not in conf.DEFAULTS or self.settings.get(k) == v:
                continue
            old = self.settings[k]
            self.settings[k] = v
            changed = True
            if k == "experiments":
                for key in v:
                    var = self.variant(key)
                    if not isinstance(old, dict) or key not in old or old[key] != v[key]:
                        self.event("setting_changed", name="experiment." + key, value=var)
            elif isinstance(v, dict):
                for key, val in v.items():
                    if not isinstance(old, dict) or old.get(key) != val:
                        self.event("setting_changed", name="%s.%s" % (k, key),
                                   value=val if isinstance(val, (str, int, float, bool)) else json.dumps(val))
            else:
                self.event("setting_changed", name=k, value=v)
                if k == "sample_s":  # at once, not after the old interval runs out
                    self.next_sample = min(self.next_sample, self.clock.up() + v * 1000)
        if changed:
            saved = flash.read_json(SETTINGS, {})
            saved.update(new)
            flash.write_json(SETTINGS, saved)
            log("settings changed: " + ", ".join(sorted(new)))

    def variant(self, key):
        v = self.settings["experiments"].get(key)
        if v in ("A", "B"):
            return v
        return variant(key, self.dev, float(v or 0.5))

    # -- loops ------------------------------------------------------------------------
    def run(self):
        b = self.b
        b.wdt_start(WDT_MS)
        if self.cause != "deepsleep":
            if self.last_error:
                self.event("power_on", reset_cause=self.cause, last_error=self.last_error)
            else:
                self.event("power_on", reset_cause=self.cause)
        if _exists(OTA_POINTER):
            import ota
            if ota.boot_events(self, FW_VERSION):
                self.trial_since = self.b.ticks_ms()
        if self.settings["low_power"]:
            import lowpower  # only battery devices carry this code in RAM
            return lowpower.wake(self)
        up = self.clock.up()
        self.next_sample = up
        next_hb = up + self.settings["heartbeat_s"] * 1000
        while not b.finished():
            b.wdt_feed()
            s = self.settings
            for button in b.poll_inputs():
                self.on_input(button)
            up = self.clock.up()
            if self.session_up is not None and up - self.session_up >= s["session_idle_s"] * 1000:
                self.event("session_end")
                self.session_up = None
            if up >= self.next_sample:
                self.sample()
                self.next_sample += s["sample_s"] * 1000
                if self.next_sample <= up:  # fell behind (a long stall): skip, do not burst
                    self.next_sample = up + s["sample_s"] * 1000
            if up >= next_hb:
                self.heartbeat()
                next_hb = up + s["heartbeat_s"] * 1000
            # The first envelope of a boot goes as soon as there is a connection: a
            # device that just came up (or was just flashed) is heard at once, not after
            # flush_s.
            if self.batch and (len(self.batch) >= s["batch_records"] or
                               self.batch_bytes >= ENVELOPE_BYTES or
                               up - self.batch_up >= s["flush_s"] * 1000 or
                               (self.seq == 0 and self.client is not None)):
                self.flush()
            self.network()
            if self.trial_since is not None:
                self.trial()
            up = self.clock.up()
            wait = min(TICK_MS, self.next_sample - up, next_hb - up)
            b.idle(wait, self.client.poller if self.client is not None else None)
        self.finish()

    def finish(self):
        """The sim board's scenario is over: send what is left, then leave cleanly."""
        if self.session_up is not None:
            self.event("session_end")
        if self.batch:
            self.flush()
        end = self.clock.up() + DRAIN_MS
        while (self.inflight or not self.journal.empty()) and self.clock.up() < end:
            self.b.wdt_feed()
            self.network()
            self.b.idle(TICK_MS, self.client.poller if self.client is not None else None)
        left = len(self.inflight) + (0 if self.journal.empty() else 1)
        if self.client is not None:
            try:
                self.client.publish(self.t_status, b"offline", qos=0, retain=True)
            except OSError:
                pass
            self.client.disconnect()
        log("scenario finished: boot %d, %d envelopes, %s" % (
            self.boot, self.seq, "all acknowledged" if not left else "some still journaled"))

    def flush_to_journal(self):
        if self.batch:
            self.count_dropped(self.journal.append(self.close_batch()))
