"""Per-device state over the compacted days: what the all-time metrics would otherwise
rebuild from every per-day rollup row on each query.

The per-day rollups make a metric's cost grow with devices x days. A state is one
query's answer over the first days of the dataset (its covered days), in a form that
the same metric can take in place of those days' rollup rows and still add the later
days to: each device's first and last day, the weeks it was active, the days it was
active, its first funnel steps (states.sql says, per state, why that suffices). So an
all-time question reads a few rows per device plus the days after the covered ones.

Compaction writes the states after the rollups, over the longest run of days from the
first one whose rollups all match their day's files:

    <root>/states/<name>-<query hash>/<last covered day>-<covered hash>.parquet

with the covered days and the rollup key of each in the file's metadata. A connection
reads a state only while each covered day still has that key (late data on a covered
day changes it) and every other day of data comes after the covered ones, which is
what the metrics' "and the later days" relies on; otherwise every state is empty and
the metrics read every day's rollup rows, as without states.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from fleetpulse.ingest.store import Store

from .rollups import plain_ints
from .sqltext import declared, query_text, sql_str

if TYPE_CHECKING:
    from .layout import Layout

log = logging.getLogger("fleetpulse.states")

STATES_SQL = Path(__file__).with_name("states.sql")
STATE_DIR = "states"
_COVERED_KEY = b"fleetpulse.covered"
# through when no state is read: before any day, so "the later days" are all of them
NO_STATE = "1969-12-31"


@dataclass(frozen=True)
class StateQuery:
    query: str  # over the connection's views, with {through} the last covered day
    empty: str  # a SELECT of the state's columns and no rows, read when it is not valid


@cache
def state_queries() -> dict[str, StateQuery]:
    """name -> its query and its empty form, from states.sql."""
    out: dict[str, StateQuery] = {}
    for name, body in declared(STATES_SQL, "state").items():
        empty = re.search(r"^-- empty: (.*)$", body, flags=re.M)
        if empty is None:
            raise ValueError(f"states.sql: state {name} has no '-- empty:' line")
        out[name] = StateQuery(query_text(body), empty.group(1).strip())
    return out


def state_dir(name: str) -> str:
    """A state's folder, named after its query: one written by an older definition is
    never read as this one's."""
    return f"{name}-{hashlib.sha256(state_queries()[name].query.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class States:
    """The states a connection reads: name -> file, and the first and last covered day."""
    files: dict[str, str]
    first: str
    through: str


def _day_keys(layout: Layout) -> dict[str, str]:
    """day -> its rollup key, for the days every rollup covers."""
    days: dict[str, str] | None = None
    for valid in layout.rollups.values():
        keys = {d: Path(p).stem for d, p in valid.items()}
        days = keys if days is None else {d: k for d, k in days.items() if keys.get(d) == k}
    return days or {}


def coverable(layout: Layout) -> dict[str, str]:
    """The days a state can cover now, with their rollup keys: from the first day of
    data, as long as every rollup covers each day."""
    keys, out = _day_keys(layout), {}
    for day in layout.data_days():
        if day not in keys:
            break
        out[day] = keys[day]
    return out


@lru_cache(maxsize=256)
def _covered(path: str) -> dict[str, str]:
    # Keyed by path: a state file is never rewritten under its name (the name carries a
    # hash of what it covers).
    meta = pq.read_schema(path).metadata or {}
    return dict(json.loads(meta.get(_COVERED_KEY, b"{}")))


def find_states(store: Store, layout: Layout) -> States | None:
    """The states valid for `layout`: one file per state, each covering days that still
    hold the files it was computed from, with every other day after them. None when any
    state is missing or out of date."""
    if not store.local or not layout.rollups:
        return None
    keys, files, covered = _day_keys(layout), {}, None
    for name in state_queries():
        found = sorted(Path(store.path(STATE_DIR, state_dir(name))).glob("*.parquet"))
        if len(found) != 1:
            return None
        try:
            these = _covered(str(found[0]))
        except OSError:
            return None
        if covered is None:
            covered = these
        if not these or these != covered:
            return None
        files[name] = str(found[0])
    if covered is None or any(keys.get(d) != k for d, k in covered.items()):
        return None
    through = max(covered)
    if any(d not in covered and d <= through for d in layout.data_days()):
        return None
    return States(files, min(covered), through)


def view_statements(states: States | None) -> list[str]:
    """`state_<name>` views and the constant macros state_first() and state_through()
    the metrics compare with: the state files, or empty with through before any day."""
    stmts = []
    for name, q in state_queries().items():
        body = (f"SELECT * FROM read_parquet({sql_str(states.files[name])})" if states
                else q.empty)
        stmts.append(f"CREATE OR REPLACE VIEW state_{name} AS {body}")
    first, through = (states.first, states.through) if states else (NO_STATE, NO_STATE)
    stmts.append(f"CREATE OR REPLACE MACRO has_state() AS {'true' if states else 'false'}")
    stmts.append(f"CREATE OR REPLACE MACRO state_first() AS DATE {sql_str(first)}")
    stmts.append(f"CREATE OR REPLACE MACRO state_through() AS DATE {sql_str(through)}")
    # whether since..until takes in every covered day: then an all-time state stands
    # for them (with no state, never: NO_STATE is before any since)
    stmts.append("CREATE OR REPLACE MACRO state_covers(since, until) AS "
                 "since <= state_first() AND until >= state_through()")
    # whether a rollup row of day `day` is one the states do not stand for, when a
    # metric reads them (use_state): the rows it adds to the state's
    stmts.append("CREATE OR REPLACE MACRO uncovered(day, use_state) AS "
                 "NOT use_state OR day > state_through()")
    # the breakdowns the states are kept for: not per experiment variant or device
    # attribute, which the metrics look up per query (an attribute changes with the
    # registry, not with the data)
    stmts.append("CREATE OR REPLACE MACRO state_breakdown(segment_by) AS "
                 "segment_by IN ('all', 'fw', 'hw')")
    return stmts


def write_states(store: Store) -> bool:
    """Write every state over the days it can cover now, unless the states there already
    cover exactly those; remove what older definitions wrote. Whether it wrote."""
    # Imported here: dataset imports rollups, which calls this.
    from .dataset import connect
    from .layout import list_layout

    if not store.local:
        return False
    root = Path(store.path(STATE_DIR))
    current = {state_dir(n) for n in state_queries()}
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name not in current:
                shutil.rmtree(p, ignore_errors=True)
    layout = list_layout(store)
    covered = coverable(layout)
    valid = find_states(store, layout)
    if not covered or (valid is not None and max(covered) == valid.through):
        return False
    through = max(covered)
    tag = hashlib.sha256(json.dumps(sorted(covered.items())).encode()).hexdigest()[:12]
    meta = {_COVERED_KEY: json.dumps(covered).encode()}
    con = connect(store, use_states=False)
    try:
        for name, q in state_queries().items():
            sql = q.query.replace("{through}", f"DATE {sql_str(through)}")
            table = plain_ints(con.sql(sql).to_arrow_table()).replace_schema_metadata(meta)
            d = Path(store.path(STATE_DIR, state_dir(name)))
            stale = list(d.glob("*.parquet")) if d.is_dir() else []
            written = store.write_table(f"{STATE_DIR}/{state_dir(name)}/{through}-{tag}.parquet",
                                        table)
            # A connection that listed a removed file lists again (dataset.py).
            store.delete([str(p) for p in stale if str(p) != written])
    finally:
        con.close()
    log.info("states over %d day(s) through %s", len(covered), through)
    return True
