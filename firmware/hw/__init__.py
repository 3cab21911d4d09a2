# Board selection: the one place that knows which hardware module a port uses, so the
# application never imports board-specific code itself.
import sys


def load(name=None, opts=None):
    name = name or sys.platform
    if name == "esp32":
        from hw import esp32
        return esp32.Board(opts)
    if name == "rp2":
        from hw import rp2
        return rp2.Board(opts)
    # the unix port (sys.platform "linux" or "darwin") runs the firmware-in-the-loop board
    from hw import sim
    return sim.Board(opts)
