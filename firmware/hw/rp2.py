# Raspberry Pi Pico W board: the RP2040's internal temperature sensor (ADC 4), buttons
# on GPIO, the CYW43 WLAN. It has no humidity sensor: readings need a humidity value in
# config.json's "board": {"humidity_pct": ...}, else the board sends events only.
import machine

from hw.board import MicroBoard

# What MicroPython's RP2 port returns (ports/rp2/modmachine.c): WDT_RESET whenever the
# watchdog caused the reboot, which machine.reset() and the wake from deep sleep also
# use, else PWRON_RESET (power or the RUN pin). The firmware notes its own resets and
# sleeps first (resetnote.py), so an unnoted WDT_RESET is a watchdog timeout.
_CAUSES = {machine.PWRON_RESET: "power_on", machine.WDT_RESET: "watchdog"}


class Board(MicroBoard):
    name = "rp2"
    hw = "thermostat-picow"
    default_buttons = {"eco": 15}
    wdt_max_ms = 8388  # the RP2040 watchdog's limit

    def __init__(self, opts=None):
        super().__init__(opts)
        self._adc = machine.ADC(4)
        self._humidity = (opts or {}).get("humidity_pct")

    def read_environment(self):
        if self._humidity is None:
            return None  # the contract requires humidity
        # RP2040 datasheet 4.9.5: T = 27 - (V - 0.706) / 0.001721, V from the 12-bit
        # reading scaled to 16 bits by read_u16.
        v = self._adc.read_u16() * 3.3 / 65535
        return {"temperature_c": round(27 - (v - 0.706) / 0.001721, 2),
                "humidity_pct": self._humidity}

    def reset_cause(self):
        return _CAUSES.get(machine.reset_cause(), "unknown")
