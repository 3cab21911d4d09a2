"""Command-line plumbing shared by every subcommand: env-var defaults, addresses, logs."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from pathlib import Path

from .errors import UserError, warn


def env(name: str, default: str | None = None) -> str | None:
    """Default for a flag: FLEETPULSE_<NAME> from the environment, else `default`."""
    return os.environ.get(f"FLEETPULSE_{name}", default)


def renamed(old: str, action: str = "store") -> type[argparse.Action]:
    """An argparse action for a flag whose old name still works for a release, with a
    warning naming the new one: `p.add_argument("--new", "--old", action=renamed("--old"))`."""
    base = {"store": argparse._StoreAction, "append": argparse._AppendAction}[action]

    class Renamed(base):  # type: ignore[valid-type, misc]
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: object, option_string: str | None = None) -> None:
            if option_string == old:
                warn(f"{parser.prog} {old} is now {self.option_strings[0]}; {old} goes in "
                     "the next release")
            super().__call__(parser, namespace, values, option_string)

    return Renamed


def add_broker_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default=env("BROKER", "127.0.0.1:1883"), metavar="HOST:PORT",
                   help="MQTT broker (env FLEETPULSE_BROKER, default %(default)s)")


def add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=env("DATA", "data"), metavar="DIR|s3://BUCKET/PREFIX",
                   help="the dataset: a directory or an S3 prefix (env FLEETPULSE_DATA, "
                        "default %(default)s)")


DEFAULT_REGISTRY = "broker-data/registry"  # where `fleetpulse broker` keeps it by default


def add_registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, default=Path(env("REGISTRY", DEFAULT_REGISTRY)
                                                         or DEFAULT_REGISTRY),
                   help="device registry directory (env FLEETPULSE_REGISTRY, default "
                        "%(default)s)")


def add_auth_args(p: argparse.ArgumentParser, service: str) -> None:
    """--username/--password, or the command's own service account from --registry."""
    p.add_argument("--username", default=env("MQTT_USERNAME"),
                   help=f"MQTT username (env FLEETPULSE_MQTT_USERNAME; default: the "
                        f"{service} service account from --registry)")
    add_secret_args(p, "password", "MQTT_PASSWORD", "MQTT password")
    add_registry_arg(p)
    p.set_defaults(service_account=service)


def parse_attributes(pairs: list[str]) -> dict[str, str]:
    """NAME=VALUE pairs (from --attr) as a dict; a pair without '=' is a mistake."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise UserError(f"attribute {pair!r} is not NAME=VALUE, e.g. --attr region=eu-west")
        out[name.strip()] = value.strip()
    return out


def add_secret_args(p: argparse.ArgumentParser, name: str, env_name: str, what: str) -> None:
    """--NAME-file FILE (first line), env FLEETPULSE_<ENV_NAME>, or --NAME on the command
    line, which works but warns: every user of the machine can read it with `ps`."""
    flag = name.replace("_", "-")
    p.add_argument(f"--{flag}-file", type=Path, metavar="FILE",
                   help=f"read the {what} from the first line of FILE")
    p.add_argument(f"--{flag}", default=None,
                   help=f"the {what} itself (visible to `ps`: prefer --{flag}-file or env "
                        f"FLEETPULSE_{env_name})")
    p.set_defaults(**{f"_{name}_env": env_name, f"_{name}_what": what})


def secret(args: argparse.Namespace, name: str, prompt: bool = False) -> str | None:
    """The secret named by add_secret_args: from its file, the environment or argv (with a
    warning), else asked for at the terminal when `prompt`, else None."""
    flag = name.replace("_", "-")
    path: Path | None = getattr(args, f"{name}_file")
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise UserError(f"cannot read --{flag}-file {path}: {e.strerror}") from None
        if not lines or not lines[0]:
            raise UserError(f"--{flag}-file {path} is empty: put the secret on its first line")
        return lines[0]
    from_env = env(getattr(args, f"_{name}_env"))
    if from_env:
        return from_env
    given: str | None = getattr(args, name)
    if given is not None:
        warn(f"--{flag} on the command line is visible to every user of this machine (ps); "
             f"use --{flag}-file FILE or FLEETPULSE_{getattr(args, f'_{name}_env')}")
        return given
    if prompt and sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{getattr(args, f'_{name}_what')}: ")
    return None


def resolve_auth(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if args.username:
        return args.username, secret(args, "password", prompt=True)
    if args.password is not None or args.password_file is not None:
        # without a user name the password would be dropped for the service account's
        raise UserError("--password needs --username; without both, the "
                        f"{args.service_account} service account from --registry is used")
    from fleetpulse.gateway.registry import Registry

    reg = Registry(args.registry)
    if reg.exists:
        c = reg.service(args.service_account)
        return c.username, c.password
    return None, None


# What a folder ingest writes to holds (any one of them; a new dataset may hold none yet).
DATASET_ENTRIES = ("readings", "events", "quarantine", "presence", "rollups", "_ingest",
                   "_wal", "_schema")


def require_dataset(data: str) -> None:
    """A local dataset must exist before it is read; object storage is checked on use.
    A folder that holds something else but no dataset is a wrong --data, not an empty
    dataset: it would answer every question with zero."""
    if data.startswith("s3://"):
        return
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"no dataset at {data}: pass --data DIR (where ingest writes)")
    if _is_dataset(root):
        return
    children = sorted(c for c in root.iterdir() if c.is_dir() and _is_dataset(c))
    if children:
        raise UserError(f"{data} holds no dataset, but {children[0]} does: pass --data "
                        f"{children[0]}")
    if any(root.iterdir()):
        raise UserError(f"{data} holds no dataset (no {', '.join(DATASET_ENTRIES[:3])} "
                        "folder): pass --data DIR (where ingest writes)")


def _is_dataset(path: Path) -> bool:
    return any((path / name).is_dir() for name in DATASET_ENTRIES)


def require_out_dir(path: Path, flag: str = "--out") -> None:
    """The folder a file is to be written into exists: checked before the work that
    produces the file, not after it."""
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: there is no folder {path.parent} (create it, "
                        f"or pass another {flag})")


def parse_broker(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, 1883
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise UserError(
            f"--broker {value!r} is not HOST:PORT (for example 127.0.0.1:1883)"
        ) from None


class _KeyValueFormatter(logging.Formatter):
    """One line per event, key=value, so logs grep and parse without a schema."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage().replace('"', "'")
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info:
            line += f' exc="{record.exc_info[1]!r}"'
        return line


def setup_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    level_env = env("LOG_LEVEL")
    if level_env and verbosity == 0:
        level = getattr(logging, level_env.upper(), logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    root = logging.getLogger("fleetpulse")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def day(value: str) -> dt.date:
    """A UTC day on the command line (argparse type): YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day: use YYYY-MM-DD") from None


def tcp_port(value: str) -> int:
    """A TCP port on the command line (argparse type): 0-65535 (0: any free port where a
    server listens)."""
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (0-65535)")
    return port
