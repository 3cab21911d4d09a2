"""pytest plugin (entry point `pytest11`): replay a capture in a test.

    def test_eco_adoption(fleetpulse_replay):
        con = fleetpulse_replay("capture/")          # a DuckDB connection
        share = con.sql("SELECT share_of_active FROM feature_adoption() "
                        "WHERE feature = 'eco_mode'").fetchone()[0]
        assert share > 0.5

The capture goes offline through ingest's pipeline into a temporary dataset (the same
validation and quarantine as from a broker); the connection has every view and metric
macro of `fleetpulse sql`. docs/ci-replay.md has the whole CI recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import duckdb


@pytest.fixture
def fleetpulse_replay(tmp_path: Path) -> Iterator[Callable[..., duckdb.DuckDBPyConnection]]:
    """A function: capture directory (and retime=, clones=) -> DuckDB connection over a
    fresh dataset holding that capture's replay."""
    from fleetpulse.analytics.dataset import connect

    from .replay import replay_offline

    opened: list[duckdb.DuckDBPyConnection] = []

    def replay(capture: str | Path, retime: str = "none",
               clones: int = 1) -> duckdb.DuckDBPyConnection:
        data = tmp_path / f"fleetpulse-replay-{len(opened)}"
        replay_offline(Path(capture), data, retime=retime, clones=clones)
        con = connect(data)
        opened.append(con)
        return con

    yield replay
    for con in opened:
        con.close()
