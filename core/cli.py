"""`fleetpulse`: one console script, a subcommand per job.

Each subsystem registers its own subcommands; this module only dispatches and turns
errors meant for people into one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from . import config
from .errors import UserError


def build_parser() -> argparse.ArgumentParser:
    from fleetpulse.analytics import cli as analytics_cli
    from fleetpulse.analytics import explain_cli
    from fleetpulse.firmware import cli as firmware_cli
    from fleetpulse.gateway import broker_cli, devices_cli, gateway_cli, rollout_cli
    from fleetpulse.ingest import cli as ingest_cli
    from fleetpulse.simulators import cli as simulators_cli

    parser = _Parser(
        prog="fleetpulse",
        description="Device telemetry from MQTT to Parquet to product metrics.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug); also after the command")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show fleetpulse's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    simulators_cli.register_demo(sub)
    broker_cli.register(sub)
    ingest_cli.register(sub)
    ingest_cli.register_compact(sub)
    simulators_cli.register(sub)
    simulators_cli.register_capture(sub)
    analytics_cli.register(sub)
    explain_cli.register(sub)
    devices_cli.register(sub)
    gateway_cli.register(sub)
    rollout_cli.register(sub)
    firmware_cli.register(sub)
    _verbose_anywhere(sub)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line saying what to do, as
    every other error is, instead of the whole usage block and then the error. The
    subcommands' parsers are of this class too (add_subparsers makes them so)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (`{self.prog} --help` shows the usage)\n")


def verbosity(args: argparse.Namespace) -> int:
    """How many -v were given, before and after the command."""
    return int(args.verbose) + int(getattr(args, "verbose_after", 0))


class _Version(argparse.Action):
    """--version, looked up only when asked: importlib.metadata costs every command
    about 20 ms of start-up (python -X importtime)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("fleetpulse")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "unknown (not installed)"
        print(f"fleetpulse {found}")
        parser.exit()


def _verbose_anywhere(sub: argparse._SubParsersAction) -> None:
    """-v after the command counts as before it (`fleetpulse ingest -v` as `fleetpulse -v
    ingest`). A subcommand parses into a namespace of its own and copies it over the
    root's, so its count has a name of its own (added to the root's by `verbosity`);
    SUPPRESS keeps a subcommand that was given none from setting it."""
    for p in set(sub.choices.values()):
        p.add_argument("-v", "--verbose", action="count", dest="verbose_after",
                       default=argparse.SUPPRESS, help="more log output (-v info, -vv debug)")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _verbose_anywhere(action)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose = verbosity(args)
    config.setup_logging(args.verbose)
    try:
        code = args.func(args)
    except UserError as e:
        _say_error(str(e))
        code = e.exit_code
    except BrokenPipeError:  # an OSError too: before the clause below
        code = _stdout_closed()
    except OSError as e:
        if e.filename is None:
            raise
        # a file the command could not read or write (permissions, a full disk): the
        # user's to mend, so one line rather than a traceback
        where = str(e.filename) + (f" -> {e.filename2}" if e.filename2 else "")
        _say_error(f"{e.strerror}: {where}")
        code = 2
    except KeyboardInterrupt:
        code = 130
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = _stdout_closed()
    sys.exit(code)


def _say_error(message: str) -> None:
    """`error:` and the message on stderr, a line per line of it. soft_wrap: one line
    whatever the width, so logs and scripts get it whole; escaped, since a message may
    quote brackets ("[at_s, seconds]") that rich would take for styles."""
    console = Console(stderr=True)
    for line in message.splitlines() or [""]:
        console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _stdout_closed() -> int:
    """The reader of our output went away (`fleetpulse sql ... | head`): what it wanted
    it has, so no traceback. stdout is pointed at /dev/null so the interpreter's own
    flush at exit does not fail again. Exit 1, as rich's Console does when a table
    meets the closed pipe, so every command ends the same way."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


if __name__ == "__main__":
    main()
