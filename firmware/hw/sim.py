# The sim board: the unix port of MicroPython standing in for a device. Sensors, buttons,
# WLAN and NTP are driven by a scenario file (JSON, path in FLEETPULSE_SCENARIO); the
# MQTT socket is real. Time is virtual: it advances only when the firmware idles, by the
# amount it asked for, while the real wait is that amount divided by the scenario's
# speed. So a 10-minute run takes 10 minutes / speed, and every timestamp is exact.
import json
import math
import os
import sys
import time

# Exit status meaning "deep sleep": `fleetpulse firmware run` starts the process again,
# as a board wakes up. 75 is EX_TEMPFAIL, unlikely to clash with a crash.
DEEP_SLEEP_EXIT = 75
WATCHDOG_EXIT = 76
RESET_EXIT = 77
_STATE = ".sim_board"


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Board:
    name = "sim"

    def __init__(self, opts=None):
        path = os.getenv("FLEETPULSE_SCENARIO")
        sc = _read_json(path) if path else None
        if path and sc is None:
            print("fleetpulse: scenario %s is missing or not JSON; running without inputs" % path)
        sc = sc or {}
        # Only compact copies of the scenario are kept: its heap is the firmware's heap.
        self.hw = sc.get("hw", "thermostat-sim")
        self._serial = str(sc.get("serial", "sim0"))  # a chip id, for claim provisioning
        self.speed = float(sc.get("speed", 1))
        self.duration_ms = int(sc.get("duration_s", 0) * 1000)
        self.inputs = sorted((int(i["at_s"] * 1000), i["button"]) for i in sc.get("inputs", ()))
        self._next_input = 0
        self.down = [(a * 1000, b * 1000) for a, b in sc.get("network_down", ())]
        self.ntp_after_ms = int(sc.get("ntp_after_s", 0) * 1000)
        self.env = [(k, v[0], v[1], v[2]) for k, v in sc.get("environment", {}).items()]
        # "fault_at_s": reading the inputs raises once at that scenario time, standing in
        # for a bug the application does not handle
        self._fault_ms = int(sc["fault_at_s"] * 1000) if "fault_at_s" in sc else None
        # "stall_at_s": [at, seconds]: the first wait after `at` lasts that long (a driver
        # that hangs), long enough for the watchdog to reset the board
        stall = sc.get("stall_at_s")
        self._stall = (int(stall[0] * 1000), int(stall[1] * 1000)) if stall else None
        # The tick counter wraps like a board's (at the interpreter's ticks period), and a
        # scenario may start it just before the wrap ("ticks_wrap_in_s"): on an ESP32 the
        # wrap comes after 12.4 days, too late for a test to wait for.
        # (ticks_add only takes a tick value: the interpreter's own, moved to zero)
        now = time.ticks_ms()
        self._tick0 = time.ticks_add(now, -time.ticks_diff(now, 0)
                                     - int(sc.get("ticks_wrap_in_s", 0) * 1000))
        sc = None
        # what the previous process left: a deep sleep keeps the RTC and says why it woke
        st = _read_json(_STATE) or {}
        try:
            os.remove(_STATE)
        except OSError:
            pass
        self._cause = st.get("cause", "power_on")
        self._faulted = st.get("faulted", False)
        self._v = 0  # virtual ms since this process started
        # virtual ms of the scenario before this process (earlier wakes and their sleeps):
        # inputs, outages and the duration are on the scenario's timeline
        self._t0 = st.get("elapsed_ms", 0)
        if "epoch_ms" in st:
            self._rtc0 = st["epoch_ms"]
        else:
                # power on: the scenario's clock starts now, but the RTC is not set until NTP
            self._rtc0 = None
        self._net0 = int(time.time() * 1000) if self._rtc0 is None else self._rtc0
        self._wdt_ms = 0
        self._fed = 0
        # FLEETPULSE_SIM_HEAP=1 (the benchmark): the largest live heap seen at any idle,
        # collected first so garbage does not count, printed when the process ends
        self._heap = os.getenv("FLEETPULSE_SIM_HEAP") == "1"
        self.heap_peak = 0

    # -- time -------------------------------------------------------------------------
    def serial(self):
        return self._serial

    def ticks_ms(self):
        return time.ticks_add(self._tick0, self._v)

    def idle(self, ms, poller=None):
        if ms > 0:
            real = int(ms / self.speed) if self.speed > 0 else 0
            if poller is not None:
                # a wait on the network is never shorter than 1 ms of real time, or
                # at high speeds a deadline for acks would pass before any could arrive
                poller.poll(max(1, real))
            elif real:
                time.sleep_ms(real)
            self._v += ms
        if (self._stall is not None and not self._faulted
                and self._t0 + self._v >= self._stall[0]):
            self._faulted = True  # once per scenario, as the fault above
            self._v += self._stall[1]
        self._check_wdt()
        if self._heap:
            import gc
            gc.collect()
            self.heap_peak = max(self.heap_peak, gc.mem_alloc())

    def rtc_ms(self):
        """Epoch ms from the real-time clock, or None when it was never set."""
        return None if self._rtc0 is None else self._rtc0 + self._v

    def sync_time(self):
        """NTP: the scenario's network clock, once the scenario lets it answer."""
        if not self.wlan_up() or self._t0 + self._v < self.ntp_after_ms:
            return None
        self._rtc0 = self._net0
        return self._rtc0 + self._v

    # -- network ----------------------------------------------------------------------
    def wlan_connect(self, ssid, password):
        return self.wlan_up()

    def wlan_up(self):
        now = self._t0 + self._v
        for a, b in self.down:
            if a <= now < b:
                return False
        return True

    def rssi(self):
        return -55 if self.wlan_up() else None

    # -- sensors and inputs -----------------------------------------------------------
    def read_environment(self):
        # Each quantity is base + amplitude * sin(2 pi t / period) of the network clock,
        # rounded to 0.01, so a test can recompute every value from the row's time.
        t = (self._net0 + self._v) / 1000
        out = {}
        for key, base, amp, period in self.env:
            out[key] = round(base + amp * math.sin(2 * math.pi * t / period), 2)
        if not out:
            out = {"temperature_c": 21.0, "humidity_pct": 45.0}
        return out

    def poll_inputs(self):
        if (self._fault_ms is not None and not self._faulted
                and self._t0 + self._v >= self._fault_ms):
            self._faulted = True
            raise RuntimeError("sim fault at %d s" % (self._fault_ms // 1000))
        got = []
        while self._next_input < len(self.inputs):
            at, button = self.inputs[self._next_input]
            if at > self._t0 + self._v:
                break
            got.append(button)
            self._next_input += 1
        return got

    # -- power and health -------------------------------------------------------------
    def reset_cause(self):
        return self._cause

    def free_mem(self):
        import gc
        return gc.mem_free()

    def wdt_start(self, timeout_ms):
        self._wdt_ms = timeout_ms
        self._fed = self._v

    def wdt_feed(self):
        self._fed = self._v

    def _check_wdt(self):
        if self._wdt_ms and self._v - self._fed > self._wdt_ms:
            print("fleetpulse: watchdog reset")
            self._leave("watchdog", None, WATCHDOG_EXIT)

    def deep_sleep(self, ms):
        rtc = self.rtc_ms()
        self._leave("deepsleep", None if rtc is None else rtc + ms, DEEP_SLEEP_EXIT, ms)

    def reset(self):
        # machine.reset() as an ESP32 reports it; the firmware notes why first
        self._leave("panic", self.rtc_ms(), RESET_EXIT)

    def _leave(self, cause, epoch_ms, code, sleep_ms=0):
        st = {"cause": cause, "elapsed_ms": self._t0 + self._v + sleep_ms,
              "faulted": self._faulted}
        if epoch_ms is not None:
            st["epoch_ms"] = epoch_ms
        with open(_STATE, "w") as f:
            json.dump(st, f)
        if sleep_ms and self.speed > 0:
            time.sleep_ms(int(sleep_ms / self.speed))
        sys.exit(code)

    def finished(self):
        """The scenario's duration is over (real boards never finish)."""
        done = self.duration_ms > 0 and self._t0 + self._v >= self.duration_ms
        if done and self._heap:
            print("sim: live heap peak %d bytes" % self.heap_peak)
        return done
