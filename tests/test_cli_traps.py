"""Mistakes that used to give a plausible answer and exit 0: each is now one line on
stderr and exit 2 (issue: a CLI that never misleads)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fleetpulse

from fleetpulse.gateway.broker import free_port
from fleetpulse.ingest.pipeline import Pipeline

T0 = 1767268800000


def one_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not p.stdout.strip()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo/data as `fleetpulse demo` lays it out, with a few rows."""
    root = tmp_path_factory.mktemp("work") / "demo"
    data = root / "data"
    p = Pipeline(data, "w")
    import json
    for seq in range(3):
        env = {"v": 1, "device_id": "cli-1", "boot": 1, "seq": seq, "fw": "1.0.0", "hw": "t",
               "sent_ms": T0 + seq, "records": [
                   {"t": T0 + seq, "type": "event", "event": "feature_used",
                    "feature": "eco_mode"}]}
        if seq == 0:
            env["records"].insert(0, {"t": T0, "type": "event", "event": "setting_changed",
                                      "name": "experiment.eco_nudge", "value": "B"})
        p.handle("devices/cli-1/telemetry", json.dumps(env).encode(), T0 + 10_000)
    p.flush()
    (root / "truth.json").write_text("{}")
    return data


def test_a_folder_above_the_dataset_names_the_dataset(dataset: Path) -> None:
    one_error(fleetpulse("metrics", "active_devices", "--data", str(dataset.parent)),
              "holds no dataset", f"--data {dataset}")


def test_a_folder_holding_something_else_is_not_an_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "mosquitto.db").write_bytes(b"")
    one_error(fleetpulse("sql", "SELECT count(*) FROM events", "--data", str(tmp_path)),
              "holds no dataset")


def test_an_empty_folder_is_still_an_empty_dataset(tmp_path: Path) -> None:
    p = fleetpulse("sql", "SELECT count(*) AS n FROM events", "--data", str(tmp_path),
            "--format", "csv")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["n", "0"]


def test_since_after_until(dataset: Path) -> None:
    one_error(fleetpulse("metrics", "active_devices", "--data", str(dataset),
                  "--since", "2026-01-05", "--until", "2026-01-01"),
              "--since 2026-01-05 is after --until 2026-01-01")


def test_the_summary_refuses_the_flags_it_would_ignore(dataset: Path) -> None:
    one_error(fleetpulse("metrics", "--data", str(dataset), "--since", "2026-01-01", "--by", "fw"),
              "--since", "--by", "name a metric")


def test_listing_a_registry_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    one_error(fleetpulse("devices", "list", "--registry", str(missing)), "no device registry",
              str(missing))
    assert not missing.exists()


def test_a_password_without_a_user_name_is_refused(tmp_path: Path) -> None:
    one_error(fleetpulse("ingest", "--broker", "127.0.0.1:1", "--data", str(tmp_path / "d"),
                  "--registry", str(tmp_path / "r"), "--password", "x"),
              "--password needs --username")


def test_configure_refuses_what_the_firmware_would_refuse(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    assert fleetpulse("devices", "add", "cfg-1", "--registry", str(reg)).returncode == 0
    one_error(fleetpulse("devices", "configure", "cfg-1", '{"sample_s": "fast"}', "--registry",
                  str(reg), "--broker", "127.0.0.1:1"),
              "the firmware would refuse these settings", "sample_s must be a positive integer")


def test_configure_of_a_device_the_registry_does_not_know(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    assert fleetpulse("devices", "add", "cfg-1", "--registry", str(reg)).returncode == 0
    one_error(fleetpulse("devices", "configure", "cfg-2", '{"sample_s": 30}', "--registry",
                  str(reg), "--broker", "127.0.0.1:1"),
              "no device cfg-2 in the registry")
    # a revoked device cannot connect to take its settings: refused too, saying so
    assert fleetpulse("devices", "revoke", "cfg-1", "--registry", str(reg)).returncode == 0
    one_error(fleetpulse("devices", "configure", "cfg-1", '{"sample_s": 30}', "--registry",
                  str(reg), "--broker", "127.0.0.1:1"),
              "device cfg-1 was revoked at", "`fleetpulse devices add cfg-1` lets it in again")


def test_a_funnel_step_naming_no_event_is_warned_about(dataset: Path) -> None:
    p = fleetpulse("metrics", "funnel", "--data", str(dataset), "--param", "step3=nosuch_event",
            "--format", "csv")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip()  # the table stands: it is right, just most likely not meant
    (line,) = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert line.startswith("warning: step3: no event 'nosuch_event'") and "feature_used" in line
    ok = fleetpulse("metrics", "funnel", "--data", str(dataset), "--param",
             "step3=feature_used:eco_mode", "--format", "csv")
    assert ok.returncode == 0 and not ok.stderr.strip(), ok.stderr


def test_version() -> None:
    p = fleetpulse("--version")
    assert p.returncode == 0 and p.stdout.startswith("fleetpulse "), (p.stdout, p.stderr)
    from importlib.metadata import version

    assert p.stdout.split()[1] == version("fleetpulse")


def test_verbose_counts_before_and_after_the_command() -> None:
    from fleetpulse.cli import build_parser, verbosity

    def parse(argv: list[str]) -> argparse.Namespace:
        ns = build_parser().parse_args(argv)
        ns.verbose = verbosity(ns)
        return ns

    assert parse(["metrics", "--list"]).verbose == 0
    assert parse(["metrics", "-v", "--list"]).verbose == 1
    assert parse(["-v", "metrics", "--list", "-v"]).verbose == 2
    assert parse(["devices", "list", "-vv"]).verbose == 2  # a sub-subcommand too


def test_a_reader_that_stops_early_gets_no_traceback(dataset: Path) -> None:
    # far more than a pipe buffer holds, so the write after `head` leaves meets a closed
    # pipe (a table shows 40 rows, which a pipe buffer takes whole: not testable so)
    for fmt in ("csv", "json"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetpulse", "sql", "--data", str(dataset), "--format",
             fmt, "SELECT range AS n, 'x' || range AS s FROM range(300000)"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 1, err
        assert not err.strip(), err


def test_an_unreachable_bucket_is_one_line() -> None:
    env = {"FLEETPULSE_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    p = fleetpulse("metrics", "active_devices", "--data", "s3://nobucket/x", env=env)
    one_error(p, "cannot list s3://nobucket/x/", "FLEETPULSE_S3_ENDPOINT")


def test_a_wide_table_keeps_whole_columns_and_says_what_it_left_out(dataset: Path) -> None:
    p = fleetpulse("sql", "--data", str(dataset), "SELECT * FROM events", env={"COLUMNS": "80"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert all(len(ln) <= 80 for ln in lines)
    header = lines[1]
    assert "device_id" in header and "date" in header  # the first and the last, whole
    n = len(fleetpulse("sql", "--data", str(dataset), "SELECT * FROM events", "--format",
                       "csv").stdout.splitlines()[0].split(","))
    shown = header.count("┃") - 2  # one of them is the "…" column
    assert f"{n - shown} of {n} columns hidden" in " ".join(lines[-2:])


def test_fit_columns() -> None:
    from fleetpulse.output import fit_columns

    assert fit_columns([2, 2], [["a", "b"]], 80) == [0, 1]
    keep = fit_columns([10] * 12, [["x" * 10] * 12], 80)
    assert keep[0] == 0 and keep[-1] == 11 and None in keep
    widths = [13 for i in keep if i is not None]  # 10 + padding and border
    assert sum(widths) + 4 + 1 <= 80
    # a very long cell is counted at a readable width, not its own
    assert fit_columns([1, 1], [["y" * 500, "z"]], 80) == [0, 1]


def test_an_experiment_no_device_reported_is_warned_about(dataset: Path) -> None:
    # the fixture's device reports applying eco_nudge (as firmware does on a config)
    for args in (("experiment", "--key", "nosuch"), ("active_devices", "--by", "variant:nosuch")):
        p = fleetpulse("metrics", *args, "--data", str(dataset), "--format", "csv")
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip()  # the hash split stands
        (line,) = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert line.startswith("warning: no device reported applying experiment 'nosuch'")
        assert "experiments reported: eco_nudge" in line
    for args in (("experiment", "--key", "eco_nudge"), ("active_devices", "--by",
                                                         "variant:eco_nudge")):
        ok = fleetpulse("metrics", *args, "--data", str(dataset), "--format", "csv")
        assert ok.returncode == 0 and not ok.stderr.strip(), ok.stderr


def test_ingest_refused_by_the_broker_stops_with_one_line(broker, tmp_path: Path) -> None:
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password\n")
    p = fleetpulse("ingest", "--broker", broker.address, "--data", str(tmp_path / "d"),
                   "--username", "fleetpulse-ingest", "--password-file", str(wrong))
    one_error(p, f"the broker at {broker.address} refused user 'fleetpulse-ingest'",
              "--password-file")
    # no registry where it was told to look, and no user name: an anonymous login, refused
    p = fleetpulse("ingest", "--broker", broker.address, "--data", str(tmp_path / "d"),
                   "--registry", str(tmp_path / "nowhere"))
    one_error(p, "refused an anonymous login", "--registry")


def test_ingest_says_once_that_it_is_up(start_ingest, tmp_path: Path) -> None:
    ing = start_ingest()
    ing.wait_subscribed()
    ing.stop()
    lines = [ln for ln in (tmp_path / "ingest-0.log").read_text().splitlines()
             if ln.startswith("ingest: ")]
    assert len(lines) == 1 and "taking devices/+/telemetry from" in lines[0], lines


def test_simulate_shows_progress_on_stderr_and_its_result_on_stdout(broker,
                                                                    tmp_path: Path) -> None:
    p = fleetpulse("simulate", "--broker", broker.address, "--registry",
                   str(broker.registry.dir), "--devices", "2", "--days", "1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("published ") and len(p.stdout.splitlines()) == 1, p.stdout
    assert "simulating 2 devices" in p.stderr


def test_renamed_flags_still_work_for_a_release_and_say_their_new_name(capsys) -> None:
    from fleetpulse.cli import build_parser

    parse = build_parser().parse_args
    for argv, dest, value, new in (
            (["broker", "--data", "bd"], "broker_data", Path("bd"), "--broker-data"),
            (["gateway", "serial", "--port", "/dev/ttyX"], "serial_port", "/dev/ttyX",
             "--serial-port"),
            (["firmware", "flash", "--port", "/dev/ttyX", "--port", "/dev/ttyY"], "serial_port",
             ["/dev/ttyX", "/dev/ttyY"], "--serial-port")):
        assert getattr(parse(argv), dest) == value
        err = capsys.readouterr().err
        assert f"--port is now {new}" in err or f"--data is now {new}" in err, err
        new_argv = [new if a in ("--data", "--port") else a for a in argv]
        assert getattr(parse(new_argv), dest) == value
        assert not capsys.readouterr().err


def test_registry_listings_print_csv_and_json_for_scripts(tmp_path: Path) -> None:
    import csv
    import io
    import json

    from fleetpulse.gateway.registry import Registry

    reg = Registry(tmp_path / "reg")
    reg.add("fmt-1", model="m1")
    reg.create_claim("m2", 3, None, "b", {})
    p = fleetpulse("devices", "list", "--registry", str(tmp_path / "reg"), "--format", "json")
    assert p.returncode == 0, p.stderr
    (dev,) = json.loads(p.stdout)
    assert dev["device"] == "fmt-1" and dev["model"] == "m1" and dev["state"] == "active"
    p = fleetpulse("devices", "claim", "list", "--registry", str(tmp_path / "reg"), "--format",
                   "csv")
    rows = list(csv.reader(io.StringIO(p.stdout)))
    assert rows[0][:3] == ["claim", "model", "devices"] and rows[1][1:3] == ["m2", "0 of 3"]


def test_an_output_file_that_cannot_be_written_is_one_line(dataset: Path,
                                                          tmp_path: Path) -> None:
    for cmd in ("report", "catalog"):
        p = fleetpulse(cmd, "--data", str(dataset), "--out", str(tmp_path / "no" / "f.out"))
        one_error(p, f"cannot write {tmp_path / 'no' / 'f.out'}: there is no folder")
    # a folder where the file should go: the operating system's reason, no traceback
    (tmp_path / "taken" / "x").mkdir(parents=True)
    for cmd in ("report", "catalog"):
        p = fleetpulse(cmd, "--data", str(dataset), "--out", str(tmp_path / "taken"))
        one_error(p, "directory", str(tmp_path / "taken"))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["taken"], "no temporary left"


def test_tables_print_csv_and_json_for_scripts(tmp_path: Path) -> None:
    """Every command that prints a table takes --format (the metrics, the registry and
    replay --golden have their own tests)."""
    import csv
    import json

    certs = tmp_path / "certs"
    assert fleetpulse("gateway", "certs", "--out", str(certs)).returncode == 0
    r = fleetpulse("gateway", "certs", "--out", str(certs), "--check", "--format", "csv")
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert r.returncode == 0 and {row["file"] for row in rows} >= {"ca.crt", "server.crt"}
    assert all(int(row["days_left"]) > 300 for row in rows)

    r = fleetpulse("firmware", "build", "--board", "esp32", "--out", str(tmp_path / "b"),
                   "--format", "json")
    files = json.loads(r.stdout)  # one document: the next steps went to stderr
    assert r.returncode == 0 and "main.py" in {f["file"] for f in files}
    assert all(f["bytes"] > 0 for f in files) and "mpremote" in r.stderr


def test_one_number_format_for_tables() -> None:
    from datetime import date

    from fleetpulse.output import cell

    assert [cell(v) for v in (12345, 0.84, 0.8400001, 2.0, 1234567.8, None, True,
                              date(2026, 2, 1), "x")] == \
        ["12,345", "0.84", "0.84", "2", "1,234,568", "", "yes", "2026-02-01", "x"]


@pytest.mark.parametrize("argv, line", [
    (["metrics", "--since", "2026-13-01"], "error: argument --since: '2026-13-01' is not a "
     "day: use YYYY-MM-DD (`fleetpulse metrics --help` shows the usage)"),
    (["firmware", "build"], "error: the following arguments are required: --board, --out "
     "(`fleetpulse firmware build --help` shows the usage)"),
    (["metric"], "error: argument COMMAND: invalid choice: 'metric' (choose from"),
    (["dashboard", "--port", "99999"], "error: argument --port: '99999' is not a TCP port "
     "(0-65535)"),
])
def test_a_command_line_mistake_is_one_line(argv: list[str], line: str) -> None:
    r = fleetpulse(*argv)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(line), \
        r.stderr


@pytest.mark.parametrize("service, name", [("presence", "fleetpulse-gateway"),
                                           ("provision", "fleetpulse-provisioner")])
def test_gateway_services_say_they_are_up_or_why_not(broker, tmp_path: Path, service: str,
                                                     name: str) -> None:
    argv = ["gateway", service, "--broker", broker.address, "--registry",
            str(broker.registry.dir)]
    if service == "presence":
        argv += ["--data", str(tmp_path / "d")]
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password\n")
    one_error(fleetpulse(*argv, "--username", name, "--password-file", str(wrong)),
              f"the broker at {broker.address} refused user {name!r}", "--password-file")

    p = subprocess.Popen([sys.executable, "-m", "fleetpulse", *argv],
                         stderr=subprocess.PIPE, text=True)
    try:
        import select

        assert select.select([p.stderr], [], [], 30)[0], "the service said nothing in 30 s"
        first = p.stderr.readline()  # its first line: written once it has subscribed
    finally:
        p.terminate()
        p.wait(10)
    topic = "devices/+/status" if service == "presence" else "provision/+/request"
    assert first == f"{service}: taking {topic} from {broker.address}\n"


def test_live_and_bulk_simulation_refuse_each_others_flags(tmp_path: Path) -> None:
    reg = ["--registry", str(tmp_path / "r"), "--broker", "127.0.0.1:1"]
    one_error(fleetpulse("simulate", "--live", *reg), "--provision")
    one_error(fleetpulse("simulate", "--live", "--provision", "--days", "3", *reg),
              "--days is for a bulk simulation")
    one_error(fleetpulse("simulate", "--speed", "60", *reg), "--speed is for --live")
    one_error(fleetpulse("simulate", "--live", "--provision", "--speed", "60", *reg),
              "--speed other than 1 needs --duration")
    assert not (tmp_path / "r").exists(), "a refused command created the registry"
