# What ESP32 and Pico W boards share: a WLAN station, NTP, buttons on GPIO with pull-ups,
# the watchdog, deep sleep. hw/esp32.py and hw/rp2.py add their sensors and reset causes.
import time

import machine
import network


class MicroBoard:
    name = "board"
    hw = "board"
    default_buttons = {"eco": 0}
    wdt_max_ms = 0  # 0: no limit of the board's own

    def __init__(self, opts=None):
        opts = opts or {}
        self.hw = opts.get("hw", self.hw)
        self._wlan = network.WLAN(network.STA_IF)
        self._wdt = None
        self._buttons = []
        for name, pin in opts.get("buttons", self.default_buttons).items():
            p = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
            self._buttons.append([name, p, p.value()])

    def ticks_ms(self):
        return time.ticks_ms()

    def serial(self):
        """The chip's own id (what a claim provisions the device by)."""
        import binascii
        return binascii.hexlify(machine.unique_id()).decode()

    def idle(self, ms, poller=None):
        if ms > 0:
            if poller is not None:
                poller.poll(ms)
            else:
                time.sleep_ms(ms)

    def rtc_ms(self):
        # An RTC that reads before 2024 was never set (it survives deep sleep and soft
        # resets, not power loss). epoch_offset_s turns a 2000 epoch into Unix time.
        if time.gmtime()[0] < 2024:
            return None
        return (time.time() + self.epoch_offset_s()) * 1000

    def epoch_offset_s(self):
        return 946684800 if time.gmtime(0)[0] == 2000 else 0

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

    def poll_inputs(self):
        # Buttons are polled (pull-up, pressed = 0) every loop, at least every 100 ms:
        # simpler than an IRQ and as quick for a person's press.
        got = []
        for b in self._buttons:
            v = b[1].value()
            if v != b[2]:
                b[2] = v
                if v == 0:
                    got.append(b[0])
        return got

    def free_mem(self):
        import gc
        return gc.mem_free()

    def wdt_start(self, timeout_ms):
        if self.wdt_max_ms:
            timeout_ms = min(timeout_ms, self.wdt_max_ms)
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
