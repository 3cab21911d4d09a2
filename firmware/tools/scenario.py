"""The sim board's scenario file, checked on the CPython side before the firmware boots.

hw/sim.py reads the scenario with as little code as the device's heap allows, so a typo
there ends in a MicroPython traceback, or in a key silently ignored. Here every key it
reads is named with its shape, and each mistake becomes one line.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetpulse.errors import UserError


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _non_negative(v: Any) -> bool:
    return _number(v) and v >= 0


def _pair(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_non_negative(x) for x in v)


# key -> (what it must be, in words; the check). What hw/sim.py reads, and nothing else.
KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "hw": ("a hardware model name", lambda v: isinstance(v, str) and bool(v)),
    "serial": ("a chip id (text or number)", lambda v: isinstance(v, str | int)),
    "speed": ("a number above 0 (times real time)", lambda v: _number(v) and v > 0),
    "duration_s": ("a number of seconds >= 0 (0: run until stopped)", _non_negative),
    "ntp_after_s": ("a number of seconds >= 0", _non_negative),
    "fault_at_s": ("a number of seconds >= 0", _non_negative),
    "ticks_wrap_in_s": ("a number of seconds >= 0", _non_negative),
    "stall_at_s": ("[at_s, seconds]", _pair),
    "network_down": ("a list of [from_s, to_s]",
                     lambda v: isinstance(v, list) and all(_pair(p) and p[0] <= p[1] for p in v)),
    "inputs": ('a list of {"at_s": seconds, "button": name}',
               lambda v: isinstance(v, list) and all(
                   isinstance(i, dict) and set(i) == {"at_s", "button"}
                   and _non_negative(i["at_s"]) and isinstance(i["button"], str) for i in v)),
    "environment": ("an object of quantity -> [base, amplitude, period_s]",
                    lambda v: isinstance(v, dict) and all(
                        isinstance(q, list) and len(q) == 3 and all(_number(x) for x in q)
                        and q[2] > 0 for q in v.values())),
}


def scenario_mistakes(doc: Any) -> list[str]:
    """Each mistake in a scenario document, one line each ([] when it is good)."""
    if not isinstance(doc, dict):
        return ["must hold a JSON object"]
    out = []
    for key, value in doc.items():
        if key not in KEYS:
            near = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            out.append(f"unknown key {key!r}{hint}; the keys are {', '.join(KEYS)}")
        elif not KEYS[key][1](value):
            out.append(f"{key} must be {KEYS[key][0]}, not {json.dumps(value)[:60]}")
    return out


def check_scenario(path: Path) -> None:
    """A UserError, a line per mistake, unless `path` holds a scenario the board takes."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"scenario {path}: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UserError(f"scenario {path} is not JSON: {e}") from None
    mistakes = scenario_mistakes(doc)
    if mistakes:
        raise UserError("\n".join(f"scenario {path}: {m}" for m in mistakes))
