"""SQL text shared by the dataset views, metrics.sql and rollups.sql: string literals, the
contract's lists filled into a SQL file, statements split out of one, and the listing of
a table's data files that views consult at query time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from fleetpulse.ingest.contract import CRASH_RESET_CAUSES, DEFAULT_HEARTBEAT_S, USAGE_EVENTS

from . import DEFAULT_FUNNEL


def sql_str(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def sql_list(items: Iterable[str]) -> str:
    """String literals separated by commas (for IN (...) or a [...] list)."""
    return ", ".join(sql_str(i) for i in items)


def fill_constants(text: str) -> str:
    """{usage_events}, {crash_reset_causes} and {default_heartbeat_s} in a SQL file, as
    the contract defines them; the dashboard's funnel steps as {funnel_stepN} (a string
    literal) and {funnel_isN} (the condition an event meets to be that step)."""
    text = (text.replace("{usage_events}", sql_list(USAGE_EVENTS))
            .replace("{crash_reset_causes}", sql_list(CRASH_RESET_CAUSES))
            .replace("{default_heartbeat_s}", str(DEFAULT_HEARTBEAT_S)))
    for n, step in enumerate(DEFAULT_FUNNEL, 1):
        text = (text.replace(f"{{funnel_step{n}}}", sql_str(step))
                .replace(f"{{funnel_is{n}}}", step_condition(step)))
    return text


def step_condition(step: str) -> str:
    """What an event row meets to be a funnel step: an event name, or feature_used:<feature>
    for one feature (as metrics.sql's funnel_step_is)."""
    if step.startswith("feature_used:"):
        return f"(event = 'feature_used' AND feature = {sql_str(step[13:])})"
    return f"(event = {sql_str(step)})"


def declared(path: Path, kind: str) -> dict[str, str]:
    """The sections of a SQL file that each start with a line "-- <kind>: NAME": name ->
    the text up to the next one (its comment lines included), the contract's lists and
    the dashboard's funnel steps filled in."""
    out: dict[str, str] = {}
    for chunk in re.split(rf"^-- {kind}: ", fill_constants(path.read_text()), flags=re.M)[1:]:
        name, body = chunk.split("\n", 1)
        out[name.strip()] = body
    return out


def query_text(body: str) -> str:
    """A section's one statement, without its comment lines and final ';'."""
    return without_comments(body).strip().rstrip(";")


def without_comments(text: str) -> str:
    """The text without its comment lines (which may hold ';')."""
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))


def statements(text: str) -> list[str]:
    """A SQL file's statements."""
    return [s.strip() for s in without_comments(text).split(";") if s.strip()]


def file_listing(glob_url: str) -> str:
    """SELECT file, d (its date partition), stem (its name without .parquet) over the files
    matching glob_url now, leaving out files still being written (*.tmp). Files that
    compaction has superseded (*.parquet.superseded) are listed when the glob takes them."""
    return (f"SELECT file, regexp_extract(file, 'date=([0-9-]+)/', 1)::DATE AS d, "
            f"regexp_extract(file, '/([^/]*)\\.parquet$', 1) AS stem "
            f"FROM glob({sql_str(glob_url)}) WHERE file NOT LIKE '%.tmp'")
