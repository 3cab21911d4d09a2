# Boards run main.py from source, compiling it on the device: it stays two lines, and
# everything else is precompiled .mpy. otaboot first: it picks where the modules after it
# come from (the flash as flashed, or the slot an update installed).
import otaboot  # noqa: F401
import start  # noqa: F401
