# Entry point, run by MicroPython at boot. A missing or broken config.json, or an
# unexpected error, is printed as one line and retried after a pause: a device in the
# field must never end up in a crash loop that only a cable can fix.
import sys
import time

import hw

RETRY_MS = 10000


def main():
    board = None
    while True:
        try:
            import conf
            cfg = conf.load()
            board = hw.load(cfg.get("board_type"), cfg.get("board"))
            from app import App
            App(board, cfg).run()
            return
        except conf.ConfigError as e:
            print("fleetpulse: config error: %s; retrying in %d s" % (e, RETRY_MS // 1000))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            print("fleetpulse: unexpected error, restarting the application in %d s:"
                  % (RETRY_MS // 1000))
            sys.print_exception(e)
        if board is None:
            board = hw.load()
        board.wdt_feed()
        board.idle(RETRY_MS)
        if board.finished():
            return


main()
