# Boards run main.py from source, compiling it on the device: it stays one line, and
# everything else is precompiled .mpy (start.py first of all).
import start  # noqa: F401
