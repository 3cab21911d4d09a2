"""Device attributes: set from the CLI with their history, exported into the dataset, and
used by explain (a device counted where it was at the end of the compare period)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import fleetpulse
from test_explain import HW, _fleet
from test_metric_definitions import _dataset

from fleetpulse.analytics.dataset import connect
from fleetpulse.errors import UserError
from fleetpulse.gateway.attributes import ATTRIBUTES_FILE, intervals, read_csv
from fleetpulse.gateway.registry import Registry
from fleetpulse.ingest.store import Store


def _utc(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_a_move_is_a_new_interval_and_a_backfill_fits_in_between(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.add("d01", "plug")
    reg.set_attributes({"d01": {"region": "eu-west"}}, "2026-01-01")
    reg.set_attributes({"d01": {"region": "eu-north", "customer": "acme"}}, "2026-03-01")
    reg.set_attributes({"d01": {"customer": None}}, "2026-03-10T12:00")
    # a backfill from an older list: dated between two changes, it ends at the next one
    reg.set_attributes({"d01": {"region": "us-east"}}, "2026-02-01")
    assert reg.devices()["d01"]["attributes"] == {"region": "eu-north"}
    rows = sorted(intervals(reg.devices()).to_pylist(), key=lambda r: (r["name"], r["valid_from"]))
    assert [(r["name"], r["value"], r["valid_from"], r["valid_to"]) for r in rows] == [
        ("customer", "acme", _utc("2026-03-01"), _utc("2026-03-10T12:00")),
        ("region", "eu-west", _utc("2026-01-01"), _utc("2026-02-01")),
        ("region", "us-east", _utc("2026-02-01"), _utc("2026-03-01")),
        ("region", "eu-north", _utc("2026-03-01"), None),
    ]
    # setting what is already in effect then is no change
    assert reg.set_attributes({"d01": {"region": "us-east"}}, "2026-02-15") == 0
    with pytest.raises(UserError, match="no device d99"):
        reg.set_attributes({"d99": {"region": "x"}})
    with pytest.raises(UserError, match="attribute name 'Region!'"):
        reg.set_attributes({"d01": {"Region!": "x"}})
    with pytest.raises(UserError, match="--at 'March' is not a date"):
        reg.set_attributes({"d01": {"region": "x"}}, "March")


def test_attributes_given_when_a_device_is_added_start_then(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.add("d02", "plug", {"region": "eu-west"})
    entry = reg.devices()["d02"]
    (row,) = intervals(reg.devices()).to_pylist()
    assert (row["value"], row["valid_from"], row["valid_to"]) == (
        "eu-west", _utc(entry["added_at"].rstrip("Z")), None)


def test_csv_import_sets_leaves_and_removes(tmp_path: Path) -> None:
    f = tmp_path / "attrs.csv"
    f.write_text("device_id, region ,customer\nd01,eu-west,\nd02,,-\n")
    assert read_csv(f) == {"d01": {"region": "eu-west"}, "d02": {"customer": None}}
    f.write_text("serial,region\nx,y\n")
    with pytest.raises(UserError, match="no device_id column"):
        read_csv(f)
    f.write_text("device_id,region\nnot a device!,y\n")
    with pytest.raises(UserError, match=r"attrs\.csv:2"):
        read_csv(f)


def test_explain_by_attribute_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _dataset(data, _fleet(), hw=HW)
    reg = tmp_path / "reg"
    for dev in HW:
        r = fleetpulse("devices", "add", dev, "--registry", str(reg))
        assert r.returncode == 0, r.stderr
    # d01-d04 (the devices that moved to fw 2.0 and crashed) and d05 are in region south
    # from January, the others north; d06 moves south on Jan 8, d05 north on Jan 20
    attrs = tmp_path / "attrs.csv"
    attrs.write_text("device_id,region\n" + "".join(
        f"{d},{'south' if d in ('d01', 'd02', 'd03', 'd04', 'd05') else 'north'}\n"
        for d in HW))
    r = fleetpulse("devices", "import", str(attrs), "--at", "2026-01-01", "--registry", str(reg))
    assert r.returncode == 0 and "12 devices, 12 changed" in r.stderr, r.stderr
    for dev, region, at in (("d05", "north", "2026-01-20"), ("d06", "south", "2026-01-08")):
        r = fleetpulse("devices", "set", dev, f"region={region}", "--at", at,
                       "--registry", str(reg))
        assert r.returncode == 0, r.stderr
    r = fleetpulse("devices", "export", "--data", str(data), "--registry", str(reg))
    assert r.returncode == 0 and "14 attribute intervals of 12 devices" in r.stderr, r.stderr
    con = connect(data)
    assert con.sql("SELECT count(*) FROM device_attributes WHERE valid_to IS NULL "
                   "AND value = 'south'").fetchall() == [(5,)]
    # metrics count a device where it was that day: Jan 7 every device is active, d06
    # still north; Jan 8 only d01-d06 are, d06 now south
    r = fleetpulse("metrics", "active_devices", "--data", str(data), "--by", "attr:region",
                   "--since", "2026-01-07", "--format", "json")
    assert r.returncode == 0, r.stderr
    dau = {(row["day"], row["segment"]): row["dau"] for row in json.loads(r.stdout)}
    assert dau == {("2026-01-07", "north"): 7, ("2026-01-07", "south"): 5,
                   ("2026-01-08", "north"): 0, ("2026-01-08", "south"): 6}
    r = fleetpulse("explain", "crash_free", "--data", str(data), "--baseline",
                   "2026-01-05..2026-01-06", "--compare", "2026-01-07..2026-01-08",
                   "--dims", "attr", "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # the 11/12 -> 8/12 change is within chance at the default z >= 3: said, not ranked
    assert doc["real"] is False and doc["explanations"] == []
    # the same question as SQL with a lower bar ranks region=south: d01-d04, d05 and d06,
    # counted where they were at the end of the compare period (crash-free 6/6 -> 3/6
    # there, 5/6 -> 5/6 in the north: all of the change)
    rows = con.sql("SELECT element, devices, explanatory_power FROM explain('crash_free', "
                   "DATE '2026-01-05', DATE '2026-01-06', DATE '2026-01-07', DATE '2026-01-08', "
                   "dimensions := ['attr'], min_z := 1.5, min_devices := 1)").fetchall()
    assert rows == [(["attr:region=south"], 6, 1.0)]


def test_explain_mistakes_exit_2_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _dataset(data, _fleet(), hw=HW)
    for args, says in [
        (["--baseline", "2026-01-05", "--compare", "2026-01-07..2026-01-08"], "is not FROM..TO"),
        (["--baseline", "2026-01-05..2026-01-06", "--compare", "2026-01-07..2026-01-08",
          "--dims", "region"], "no dimension 'region'"),
        # a question the dataset cannot answer is not a "no change"
        (["--baseline", "2025-01-05..2025-01-06", "--compare", "2026-01-07..2026-01-08"],
         "no device reported then (the dataset holds 2026-01-05..2026-01-08)"),
        (["--baseline", "2026-01-05..2026-01-06", "--compare", "2026-01-07..2026-01-08",
          "--dims", "attr:region"], "no device has the attribute 'region' (known: none"),
    ]:
        r = fleetpulse("explain", "crash_free", "--data", str(data), *args)
        assert r.returncode == 2 and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_the_dashboard_breaks_down_by_attribute(tmp_path: Path) -> None:
    from fleetpulse.analytics.panels import PANELS, View, run_groups

    data = tmp_path / "data"
    con = _dataset(data, _fleet(), hw=HW, layout="rollups")  # sessions from their rollup
    reg = Registry(tmp_path / "reg")
    for dev in HW:
        reg.add(dev, HW[dev])
    # given today, an attribute says nothing of January ('(none)'): dated as it was
    reg.set_attributes({dev: {"region": "south" if dev <= "d04" else "north"} for dev in HW},
                       "2026-01-01")
    Store(data).write_table(ATTRIBUTES_FILE, intervals(reg.devices()))
    con = connect(data)
    for by in ("attr:region", "variant:eco_nudge"):
        results = dict(zip([p.key for p in PANELS], run_groups(con, View(by=by)), strict=True))
        # sessions are rolled up per firmware and model: shown for the whole fleet
        assert "segment" not in results["sessions"].columns
        assert "segment" in results["activity"].columns
    activity = run_groups(con, View(by="attr:region"))[0]
    seg = activity.columns.index("segment")
    assert {r[seg] for r in activity.rows} == {"north", "south"}
