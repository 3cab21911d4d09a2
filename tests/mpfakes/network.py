# Fake `network`: a WLAN station that connects at once and reports a fixed RSSI.
STA_IF = 0


class WLAN:
    def __init__(self, iface):
        self._up = False

    def active(self, on=None):
        return True

    def connect(self, ssid, password):
        self._up = ssid == "good"

    def isconnected(self):
        return self._up

    def status(self, what=None):
        return -61
