"""The catalog opens where BI tools open it: the DuckDB 1.x CLI from PyPI and SQLAlchemy's
duckdb-engine (as Superset connects), read-only, with the same answers as our own DuckDB.

DuckDB 1.x lives in a venv of its own (`make test` builds .venv/duckdb1): it cannot sit
beside the project's DuckDB 2 in one environment."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from datetime import date
from pathlib import Path

import duckdb
import pytest
from conftest import fleetpulse

from fleetpulse.analytics.dataset import metric_catalog
from fleetpulse.ingest.pipeline import Pipeline
from fleetpulse.simulators.fleet import Fleet

DUCKDB1 = Path(__file__).resolve().parent.parent / ".venv" / "duckdb1" / "bin"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (DUCKDB1 / "duckdb").exists():
        pytest.fail(f"no DuckDB 1.x CLI in {DUCKDB1}: `make test` installs it")
    root = tmp_path_factory.mktemp("catalog")
    pipe = Pipeline(root / "data", "compat")
    for _, envs in Fleet(20, 10, seed=3, start=date(2026, 1, 1)).hours():
        for dev, env in envs:
            pipe.handle(f"devices/{dev}/telemetry", json.dumps(env).encode(), env["sent_ms"])
    pipe.flush()
    out = root / "fleet.duckdb"
    r = fleetpulse("catalog", "--data", str(root / "data"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def _questions(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every view, and every metric with its defaults, as a row count."""
    views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                                       "ORDER BY 1").fetchall()]
    keyed = {"experiment_exposure": "'eco_nudge'"}  # the metrics that need an argument
    return ([f"SELECT count(*) FROM {v}" for v in views]
            + [f"SELECT count(*) FROM {m.name}({keyed.get(m.name, '')})"
               for m in metric_catalog()])


def test_the_duckdb_1_cli_reads_every_view_and_metric(catalog: Path) -> None:
    con = duckdb.connect(str(catalog), read_only=True)
    questions = _questions(con)
    ours = [con.execute(q).fetchone()[0] for q in questions]  # type: ignore[index]
    con.close()
    assert len(questions) > 30 and sum(ours) > 0
    script = "".join(f"{q};\n" for q in questions)
    r = subprocess.run([str(DUCKDB1 / "duckdb"), "-readonly", "-csv", "-noheader",
                        str(catalog)], input=script, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    theirs = [int(row[0]) for row in csv.reader(io.StringIO(r.stdout))]
    assert dict(zip(questions, theirs, strict=True)) == dict(zip(questions, ours, strict=True))
    version = subprocess.run([str(DUCKDB1 / "duckdb"), "--version"], capture_output=True,
                             text=True).stdout
    assert version.startswith("v1."), version


def test_duckdb_engine_opens_it_read_only(catalog: Path) -> None:
    script = """
import sys
from sqlalchemy import create_engine, text
import duckdb
assert duckdb.__version__.startswith("1."), duckdb.__version__
engine = create_engine("duckdb:///" + sys.argv[1], connect_args={"read_only": True})
with engine.connect() as c:
    print(c.execute(text("SELECT count(*) FROM readings")).scalar())
    print(c.execute(text("SELECT sum(dau) FROM active_devices()")).scalar())
    try:
        c.execute(text("CREATE TABLE x (a INT)"))
        print("writable")
    except Exception:
        print("read-only")
"""
    r = subprocess.run([str(DUCKDB1 / "python"), "-c", script, str(catalog)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    readings, dau, mode = r.stdout.split()
    con = duckdb.connect(str(catalog), read_only=True)
    assert int(readings) == con.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
    assert int(dau) == con.execute("SELECT sum(dau) FROM active_devices()").fetchone()[0]  # type: ignore[index]
    con.close()
    assert mode == "read-only"
