# The application's start, imported by main.py. A missing or broken config.json is
# printed as one line and retried after a pause; an unexpected error is noted on flash
# and resets the board after a pause. A device in the field must never end up in a
# crash loop that only a cable can fix, nor crash without the fleet hearing of it.
import buffers  # noqa: F401  (first: the big buffers before the heap fragments)
import sys

import hw

RETRY_MS = 10000


def load_config():
    import configfile
    try:
        return configfile.load()
    finally:
        del sys.modules["configfile"]  # boot-time code: its heap is needed later


def provisioned(board, cfg):
    """cfg with the device's own account; a board flashed with a batch's claim gets one
    first (provision.py, unloaded afterwards)."""
    if "claim" not in cfg:
        return cfg, None
    import provision
    try:
        ident = provision.identity()
        err = None
        if ident is None:
            ident, err = provision.request(board, cfg)
    finally:
        del sys.modules["provision"]
    if ident is None:
        return None, "provisioning: %s" % err
    cfg["device_id"] = ident["device_id"]
    cfg["mqtt"]["username"] = ident["device_id"]
    cfg["mqtt"]["password"] = ident["password"]
    return cfg, None


def main():
    board = None
    while True:
        try:
            cfg, err = load_config()
            if cfg is not None:
                board = board or hw.load(cfg.get("board_type"), cfg.get("board"))
                cfg, err = provisioned(board, cfg)
                if cfg is not None:
                    from app import App
                    App(board, cfg).run()
                    return
            else:
                err = "config error: %s" % err
            # a reset would not mend it: retried until someone copies a good file, or
            # the claim is answered
            print("fleetpulse: %s; retrying in %d s" % (err, RETRY_MS // 1000))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            # A crash: noted on flash and the board reset, so the next boot reports it
            # as power_on with reset_cause "exception" and this line, and starts with a
            # clean heap. Restarting the application within the boot would send a
            # power_on no reset preceded.
            import resetnote
            line = "%s: %s" % (type(e).__name__, e)
            print("fleetpulse: unexpected error, resetting the board in %d s: %s"
                  % (RETRY_MS // 1000, line))
            sys.print_exception(e)
            resetnote.note("exception", line)
            if board is None:
                board = hw.load()
            pause(board)
            board.reset()
            return
        if board is None:
            board = hw.load()
        pause(board)
        if board.finished():
            return


def pause(board):
    # a crash loop must not spin: one try every RETRY_MS, the watchdog fed meanwhile
    board.wdt_feed()
    board.idle(RETRY_MS)


main()
