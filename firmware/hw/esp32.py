# ESP32 board: a DHT22 for temperature and humidity (MicroPython's built-in dht driver),
# buttons on GPIO, WLAN station. Pins are set in config.json under "board"; the
# defaults fit a DevKitC.
import machine

from hw.board import MicroBoard

# What MicroPython's ESP32 port returns (ports/esp32/modmachine.c): PWRON_RESET for a
# power-on or a brownout, WDT_RESET for any watchdog, DEEPSLEEP_RESET, SOFT_RESET after
# Ctrl-D at the REPL, and HARD_RESET for machine.reset() and a panic alike. The firmware
# notes its own resets first (resetnote.py), so an unnoted HARD_RESET is a panic (or a
# machine.reset() typed at the REPL).
_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "panic",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft_reset",
}


class Board(MicroBoard):
    name = "esp32"
    hw = "thermostat-esp32"
    default_buttons = {"eco": 0}

    def __init__(self, opts=None):
        super().__init__(opts)
        opts = opts or {}
        self._dht = None
        try:
            import dht
            self._dht = dht.DHT22(machine.Pin(opts.get("dht_pin", 4)))
        except Exception as e:  # a missing sensor must not stop usage telemetry
            print("fleetpulse: DHT22 unavailable: %s" % e)

    def read_environment(self):
        if self._dht is None:
            return None
        try:
            self._dht.measure()
        except OSError:
            return None  # a failed read is skipped, never sent as a made-up value
        return {"temperature_c": self._dht.temperature(), "humidity_pct": self._dht.humidity()}

    def reset_cause(self):
        return _CAUSES.get(machine.reset_cause(), "unknown")
