# Device time. Uptime is kept from tick differences (wrap-safe); wall time is uptime
# plus an anchor learnt from the RTC or NTP. Until an anchor exists, records carry
# their uptime instead of a time, and are placed when the clock becomes known.
import time


class Clock:
    def __init__(self, board):
        self._b = board
        self._last = board.ticks_ms()
        self._up = 0
        self._anchor = None  # epoch ms at uptime 0
        rtc = board.rtc_ms()
        if rtc is not None:
            self._anchor = rtc

    def up(self):
        now = self._b.ticks_ms()
        self._up += time.ticks_diff(now, self._last)
        self._last = now
        return self._up

    def known(self):
        return self._anchor is not None

    def now(self):
        """Unix epoch ms, or None while the clock is not set."""
        up = self.up()
        return None if self._anchor is None else self._anchor + up

    def set(self, epoch_ms):
        self._anchor = int(epoch_ms) - self.up()

    def at(self, up):
        """Epoch ms of an earlier uptime of this boot (the clock must be known)."""
        return self._anchor + up
