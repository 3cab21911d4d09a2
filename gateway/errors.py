"""The one exception type whose message is shown to people as-is."""


class UserError(Exception):
    """Something the user can fix; the CLI prints its message as one line, no traceback."""
