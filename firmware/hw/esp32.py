# ESP32 board: a DHT22 for temperature and humidity (MicroPython's built-in dht driver),
# buttons on GPIO, WLAN station. Pins are set in config.json under "board"; the
# defaults fit a DevKitC.
import time

import machine
import network

_EPOCH_2000 = 946684800  # seconds from 1970 to the 2000 epoch some ports count from
_EPOCH = _EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0
_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard_reset",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft_reset",
}


class Board:
    name = "esp32"
    hw = "thermostat-esp32"

    def __init__(self, opts=None):
        opts = opts or {}
        self.hw = opts.get("hw", self.hw)
        self._wlan = network.WLAN(network.STA_IF)
        self._wdt = None
        self._buttons = []
        for name, pin in opts.get("buttons", {"eco": 0}).items():
            p = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
            self._buttons.append([name, p, p.value()])
        self._dht = None
        try:
            import dht
            self._dht = dht.DHT22(machine.Pin(opts.get("dht_pin", 4)))
        except Exception as e:  # a missing sensor must not stop usage telemetry
            print("fleetpulse: DHT22 unavailable: %s" % e)

    def ticks_ms(self):
        return time.ticks_ms()

    def idle(self, ms, poller=None):
        if ms > 0:
            if poller is not None:
                poller.poll(ms)
            else:
                time.sleep_ms(ms)

    def rtc_ms(self):
        # An RTC that reads before 2024 was never set (it survives deep sleep, not
        # power loss).
        if time.gmtime()[0] < 2024:
            return None
        return (time.time() + _EPOCH) * 1000

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
        if self._dht is None:
            return None
        try:
            self._dht.measure()
        except OSError:
            return None  # a failed read is skipped, never sent as a made-up value
        return {"temperature_c": self._dht.temperature(), "humidity_pct": self._dht.humidity()}

    def poll_inputs(self):
        # Buttons are polled (pull-up, pressed = 0) every loop, at least every 100 ms:
        # simpler and as responsive as an IRQ for a person's press.
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
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def deep_sleep(self, ms):
        machine.deepsleep(ms)

    def reset(self):
        machine.reset()

    def finished(self):
        return False
