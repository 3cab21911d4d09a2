"""The one exception type whose message is shown to people as-is, and warnings."""

import sys


class UserError(Exception):
    """Something the user can fix; the CLI prints its message as one line (a line per
    mistake), no traceback, and exits with `exit_code`."""

    exit_code = 2


def warn(message: str) -> None:
    """A warning for people: one line on stderr, where the answer on stdout still stands."""
    print(f"warning: {message}", file=sys.stderr)


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one short line of text that any UTF-8 sink can store: its type,
    the first line of its message, and no lone surrogates (a message may quote the very
    bytes that caused it)."""
    text = str(error)
    first = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return first[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
