# Why the last boot ended, as the next boot reports it in power_on's reset_cause.
# MicroPython's machine.reset_cause() cannot tell a crash from a planned reset on every
# board: the ESP32 port reports a panic and machine.reset() alike as HARD_RESET (and a
# brownout as PWRON_RESET); the RP2 port reports machine.reset(), and the wake from deep
# sleep, as WDT_RESET, since both go through the watchdog. So before every reset it makes
# itself, and after an unhandled exception, the firmware writes a note on flash; the
# next boot takes the note, and only without one believes the board's own cause.
import flash

NOTE = "reset.json"


def note(cause, error=None):
    """cause: "exception" (error: its one line), "software_reset", "deepsleep" or
    "update" (the boot into a version an update installed or rolled back to)."""
    rec = {"cause": cause}
    if error:
        rec["error"] = error[:200]
    flash.write_json(NOTE, rec)


def take(board_cause):
    """(reset cause, last error or None) of this boot; the note is used up."""
    rec = flash.read_json(NOTE)
    if rec is None:
        return board_cause, None
    try:
        import os
        os.remove(NOTE)
    except OSError:
        pass
    return rec.get("cause", board_cause), rec.get("error")
