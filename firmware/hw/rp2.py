# Raspberry Pi Pico W board: the RP2040's internal temperature sensor (ADC 4), buttons
# on GPIO, the CYW43 WLAN. It has no humidity sensor, so readings carry the last value
# configured in "board": {"humidity_pct": ...} or none at all.
import time

import machine
import network

_CAUSES = {machine.PWRON_RESET: "power_on", machine.WDT_RESET: "watchdog"}


class Board:
    name = "rp2"
    hw = "thermostat-picow"

    def __init__(self, opts=None):
        opts = opts or {}
        self.hw = opts.get("hw", self.hw)
        self._wlan = network.WLAN(network.STA_IF)
        self._adc = machine.ADC(4)
        self._humidity = opts.get("humidity_pct")
        self._wdt = None
        self._buttons = []
        for name, pin in opts.get("buttons", {"eco": 15}).items():
            p = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
            self._buttons.append([name, p, p.value()])

    def ticks_ms(self):
        return time.ticks_ms()

    def idle(self, ms, poller=None):
        if ms > 0:
            if poller is not None:
                poller.poll(ms)
            else:
                time.sleep_ms(ms)

    def rtc_ms(self):
        if time.gmtime()[0] < 2024:
            return None
        return time.time() * 1000

    def sync_time(self):
        try:
            import ntptime
            ntptime.settime()
        except Exception:
            return None
        return self.rtc_ms()

    def wlan_connect(self, ssid, password):
        self._wlan.active(True)
        if not self._wlan.isconnected():
            self._wlan.connect(ssid, password)
        return self._wlan.isconnected()

    def wlan_up(self):
        return self._wlan.isconnected()

    def rssi(self):
        try:
            return self._wlan.status("rssi")
        except Exception:
            return None

    def read_environment(self):
        # RP2040 datasheet 4.9.5: T = 27 - (V - 0.706) / 0.001721, V from the 12-bit
        # reading scaled to 16 bits by read_u16.
        v = self._adc.read_u16() * 3.3 / 65535
        out = {"temperature_c": round(27 - (v - 0.706) / 0.001721, 2)}
        if self._humidity is None:
            return None  # the contract requires humidity; a Pico W without it sends events only
        out["humidity_pct"] = self._humidity
        return out

    def poll_inputs(self):
        got = []
        for b in self._buttons:
            v = b[1].value()
            if v != b[2]:
                b[2] = v
                if v == 0:
                    got.append(b[0])
        return got

    def reset_cause(self):
        return _CAUSES.get(machine.reset_cause(), "unknown")

    def free_mem(self):
        import gc
        return gc.mem_free()

    def wdt_start(self, timeout_ms):
        # the RP2040 watchdog allows at most 8388 ms
        self._wdt = machine.WDT(timeout=min(timeout_ms, 8388))

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def deep_sleep(self, ms):
        machine.deepsleep(ms)

    def reset(self):
        machine.reset()

    def finished(self):
        return False
