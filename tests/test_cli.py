"""The `fleetpulse` command as a user runs it: subcommands, formats, one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import fleetpulse

from fleetpulse.ingest.pipeline import Pipeline

T = 1767268800000


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    pipe = Pipeline(tmp_path / "data", "cli")
    for i, dev in enumerate(("a", "b", "c")):
        env = {"v": 1, "device_id": dev, "boot": 1, "seq": 0, "fw": "1", "hw": "h", "sent_ms": T,
               "records": [{"t": T, "type": "reading", "temperature_c": 20 + i, "humidity_pct": 50},
                           {"t": T, "type": "event", "event": "feature_used", "feature": "eco"}]}
        pipe.handle(f"devices/{dev}/telemetry", json.dumps(env).encode(), T)
    pipe.flush()
    return tmp_path / "data"


def test_help_lists_every_subcommand() -> None:
    out = fleetpulse("--help").stdout
    for cmd in ("demo", "broker", "ingest", "simulate", "sql", "metrics", "catalog"):
        assert cmd in out


def test_sql_formats(dataset: Path) -> None:
    q = "SELECT device_id, temperature_c FROM readings ORDER BY device_id"
    r = fleetpulse("sql", "--data", str(dataset), q, "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert list(csv.reader(io.StringIO(r.stdout))) == [
        ["device_id", "temperature_c"], ["a", "20.0"], ["b", "21.0"], ["c", "22.0"]]
    r = fleetpulse("sql", "--data", str(dataset), "SELECT * FROM devices ORDER BY 1",
                   "--format", "json")
    assert [d["device_id"] for d in json.loads(r.stdout)] == ["a", "b", "c"]
    r = fleetpulse("sql", q, env={"FLEETPULSE_DATA": str(dataset)})
    assert r.returncode == 0 and "22" in r.stdout


def test_a_long_table_shows_its_ends_and_says_how_to_get_every_row(dataset: Path) -> None:
    q = "SELECT range AS n FROM range(1000)"
    r = fleetpulse("sql", "--data", str(dataset), q)
    assert r.returncode == 0, r.stderr
    shown = [int(c) for line in r.stdout.splitlines()
             if (c := line.strip("│ ").strip()).isdigit()]
    assert shown == [*range(20), *range(980, 1000)]
    assert "40 of 1,000 rows shown" in r.stdout and "--format csv" in r.stdout
    r = fleetpulse("sql", "--data", str(dataset), q, "--format", "csv")
    assert r.stdout.split() == ["n", *map(str, range(1000))]


def test_metrics_prints_the_three_metrics(dataset: Path) -> None:
    r = fleetpulse("metrics", "--data", str(dataset))
    assert r.returncode == 0, r.stderr
    assert "Daily active devices" in r.stdout and "Feature adoption" in r.stdout
    assert "2026-01-01" in r.stdout and "eco" in r.stdout and "100" in r.stdout


def test_every_metrics_command_takes_format(dataset: Path) -> None:
    r = fleetpulse("metrics", "--data", str(dataset), "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["Feature adoption (share of active devices that used each feature)"][0][
        "feature"] == "eco"
    r = fleetpulse("metrics", "--data", str(dataset), "--format", "csv")
    assert r.returncode == 2 and "use --format json" in r.stderr and r.stdout == ""
    listing = json.loads(fleetpulse("metrics", "--list", "--format", "json").stdout)
    names = [m["metric"] for m in listing]
    assert "fleet_health" in names and names[-1] == "experiment"
    rows = list(csv.DictReader(io.StringIO(fleetpulse("metrics", "--list", "--format",
                                                      "csv").stdout)))
    assert [r["metric"] for r in rows] == names
    r = fleetpulse("metrics", "experiment", "--key", "x", "--data", str(dataset),
                   "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["verdict"].startswith("not enough data") and doc["exposed"] == {"A": 1, "B": 2}


def test_readme_metric_table_is_what_the_macros_say() -> None:
    """The README's metric table is the macros' own descriptions: docs cannot drift."""
    from fleetpulse.analytics.dataset import metric_catalog

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for m in metric_catalog():
        assert f"| `{m.name}` | {m.description} |" in readme, m.name


def test_metrics_by_experiment_variant(dataset: Path) -> None:
    # sha256 buckets for "x": a 3142 and b 322 (B), c 9704 (A)
    r = fleetpulse("metrics", "active_devices", "--by", "variant:x", "--format", "csv",
                   "--data", str(dataset))
    assert r.returncode == 0, r.stderr
    got = {(row["segment"], row["dau"]) for row in csv.DictReader(io.StringIO(r.stdout))}
    assert got == {("A", "1"), ("B", "2")}
    r = fleetpulse("metrics", "sessions", "--by", "variant:x", "--data", str(dataset))
    assert r.returncode == 2 and "no breakdown by experiment variant" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = fleetpulse("metrics", "active_devices", "--by", "variant:x:2", "--data", str(dataset))
    assert r.returncode == 2 and "use fw, hw, variant:KEY" in r.stderr


def test_catalog_command(dataset: Path, tmp_path: Path) -> None:
    r = fleetpulse("catalog", "--data", str(dataset), "--out", str(tmp_path / "f.duckdb"))
    assert r.returncode == 0 and "device_days" in r.stdout


@pytest.mark.parametrize("args, says", [
    (["sql", "--data", "/nonexistent/x", "SELECT 1"], "no dataset at /nonexistent/x"),
    (["sql", "--data", ".", "SELEC nonsense"], "query failed"),
    (["simulate", "--broker", "127.0.0.1:1", "--devices", "1", "--days", "1", "--no-progress"],
     "cannot reach the broker"),
    (["ingest", "--broker", "host:notaport"], "is not HOST:PORT"),
])
def test_errors_are_one_line_without_traceback(args: list[str], says: str, tmp_path) -> None:
    r = fleetpulse(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert says in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
