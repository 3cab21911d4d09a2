"""MQTT facts every service that logs in to the broker shares."""

from __future__ import annotations

import sys

from .errors import UserError

# CONNACK codes that mean these credentials are not let in (MQTT 3.1.1 and 5)
REFUSED_LOGIN = frozenset({0x04, 0x05, 0x86, 0x87})


def say_up(service: str, topic: str, host: str, port: int, extra: str = "") -> None:
    """Once, on stderr, for a person starting a service: it is subscribed and taking
    messages (quiet logs would otherwise leave them guessing)."""
    print(f"{service}: taking {topic} from {host}:{port}{extra}", file=sys.stderr, flush=True)


def refused_login(host: str, port: int, username: str | None, detail: object) -> UserError:
    """What to tell a person whose service the broker refused at its first login. Wrong
    credentials from the start do not mend by retrying (services looped "not authorized;
    reconnecting" for ever); once a service has been in, a refusal may be an account
    being rotated, and is retried."""
    who = f"user {username!r}" if username else "an anonymous login"
    return UserError(f"the broker at {host}:{port} refused {who} ({detail}): pass "
                     "--username and --password-file, or --registry where the broker keeps "
                     "its accounts (broker-data/registry by default)")


def unreachable_broker(address: str, error: OSError) -> UserError:
    """What to tell a person whose command found no broker at `address`."""
    return UserError(f"cannot reach the broker at {address} ({error}): start it with "
                     "`fleetpulse broker` or pass --broker HOST:PORT")
