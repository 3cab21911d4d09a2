# The application's start, imported by main.py. A missing or broken config.json, or an
# unexpected error, is printed as one line and retried after a pause: a device in the
# field must never end up in a crash loop that only a cable can fix.
import buffers  # noqa: F401  (first: the big buffers before the heap fragments)
import sys

import hw

RETRY_MS = 10000
RESET_AFTER = 5


def load_config():
    import configfile
    try:
        return configfile.load()
    finally:
        del sys.modules["configfile"]  # boot-time code: its heap is needed later


def main():
    board = None
    errors = 0
    while True:
        try:
            cfg, err = load_config()
            if cfg is not None:
                board = hw.load(cfg.get("board_type"), cfg.get("board"))
                from app import App
                App(board, cfg).run()
                return
            print("fleetpulse: config error: %s; retrying in %d s" % (err, RETRY_MS // 1000))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            errors += 1
            print("fleetpulse: unexpected error, restarting the application in %d s:"
                  % (RETRY_MS // 1000))
            sys.print_exception(e)
        if board is None:
            board = hw.load()
        if errors >= RESET_AFTER:
            # the same failure again and again (a fragmented or exhausted heap, modules
            # half imported): a reset gives the application a clean heap
            print("fleetpulse: %d errors in a row, resetting the board" % errors)
            board.reset()
        board.wdt_feed()
        board.idle(RETRY_MS)
        if board.finished():
            return


main()
