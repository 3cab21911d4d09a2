# Fake `machine` for running hw/esp32.py and hw/rp2.py in the MicroPython unix port:
# the hardware edge only. Tests set pin levels and ADC values through FAKE.
PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
FAKE = {"pins": {}, "adc": {}, "reset_cause": PWRON_RESET, "wdt": [], "slept": None}


class Pin:
    IN, OUT, PULL_UP = 0, 1, 2

    def __init__(self, n, mode=None, pull=None):
        self.n = n
        FAKE["pins"].setdefault(n, 1)

    def value(self):
        return FAKE["pins"][self.n]


class ADC:
    def __init__(self, ch):
        self.ch = ch

    def read_u16(self):
        return FAKE["adc"].get(self.ch, 0)


class WDT:
    def __init__(self, timeout):
        FAKE["wdt"].append(("start", timeout))

    def feed(self):
        FAKE["wdt"].append(("feed",))


def reset_cause():
    return FAKE["reset_cause"]


def deepsleep(ms):
    FAKE["slept"] = ms


def reset():
    FAKE["reset"] = True
