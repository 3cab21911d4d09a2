# Low-power mode for battery devices: each wake samples once and journals the record;
# every publish_every-th wake (and the last, and any wake whose clock is unknown)
# connects and drains the journal; then the board deep-sleeps. The journal and
# state.json are what survive the sleep.
import gc

import flash
import resetnote
from app import STATE, TICK_MS, log


def wake(app):
    s = app.settings
    app.sample()
    app.flush_to_journal()
    wakes = app.state.get("wakes", 0) + 1
    app.state["wakes"] = wakes
    flash.write_json(STATE, app.state)
    # connect every publish_every-th wake, at the last one, and whenever the clock
    # is not known yet (records of a boot that never learnt the time are lost)
    if wakes % s["publish_every"] == 0 or app.b.finished() or not app.clock.known():
        end = app.clock.up() + 60000
        while not app.journal.empty() and app.clock.up() < end:
            app.b.wdt_feed()
            app.network()
            if app.client is None and app.next_connect > end:
                break
            app.b.idle(TICK_MS, app.client.poller if app.client is not None else None)
        if app.client is not None:
            app.client.disconnect()
    if app.b.finished():
        log("scenario finished: low-power, %d wakes" % wakes)
        return
    gc.collect()
    resetnote.note("deepsleep")  # an RP2 wakes with the watchdog's reset cause
    app.b.deep_sleep(s["sleep_s"] * 1000)
