"""Ingest, compaction and queries against S3, here a local S3 endpoint (moto's server)
started by the test; DuckDB reads it through pyarrow, needing no extension download."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pyarrow.fs as pafs
import pytest
from conftest import LoadPublisher, ingest_credentials, wait_until

from fleetpulse.analytics.dataset import connect
from fleetpulse.gateway.broker import free_port
from fleetpulse.ingest.compact import compact
from fleetpulse.ingest.process import IngestProcess
from fleetpulse.ingest.store import Store

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_REGION": "us-east-1"}


@pytest.fixture
def s3(tmp_path, monkeypatch) -> Iterator[str]:
    """A local S3 endpoint with an empty bucket; returns the dataset's s3:// prefix."""
    port = free_port()
    # The environment's own moto, not whatever `moto_server` is first on PATH: moto
    # 5.2.1 answers CompleteMultipartUpload in a way pyarrow rejects (fixed in 5.2.5).
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=log, stderr=log)
    for k, v in {**S3_ENV, "FLEETPULSE_S3_ENDPOINT": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(k, v)
    # fleetpulse never creates buckets; the test makes its own, as an operator would.
    admin = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                              region="us-east-1", allow_bucket_creation=True)
    try:
        wait_until("the S3 endpoint to create the bucket", lambda: _create_bucket(admin),
                   timeout=30)
        yield "s3://fleet-data/telemetry"
    finally:
        proc.terminate()
        proc.wait(10)


def _create_bucket(fs: pafs.S3FileSystem) -> bool:
    try:
        fs.create_dir("fleet-data")
        return True
    except OSError:
        return False


def test_ingest_compact_and_query_on_s3(broker, s3, tmp_path) -> None:
    state = tmp_path / "state"
    ingest = IngestProcess(broker.address, s3, client_id="ingest-s3", state_dir=state,
                           extra_args=["--flush-rows", "500", "--flush-seconds", "0.3",
                                       "--session-expiry", "60"],
                           log_path=tmp_path / "ingest.log",
                           credentials=ingest_credentials(broker)).start()
    ingest.wait_subscribed()
    load = LoadPublisher(broker, messages=1500, per_message=4, prefix="s3")
    try:
        load.start().wait_acked(timeout=60)
        ingest.wait_messages(load.messages, timeout=60)
        assert ingest.stop() == 0
    finally:
        load.close()
        ingest.kill()
    store = Store(s3)
    assert len(store.files("readings")) >= 2, "several flushes: something to compact"
    assert not (state / "readings").exists(), "the data went to S3, not the state dir"

    con = connect(s3)
    assert con.execute("SELECT count(*), count(DISTINCT device_id) FROM readings").fetchall() \
        == [(load.records, 50)]
    assert con.execute("SELECT count(*) FROM active_devices()").fetchall() == [(0,)]
    con.close()

    done = compact(s3, grace_s=0)
    assert {c.table for c in done} == {"readings"}
    assert [len(f) for f in store.partitions("readings").values()] == [1]
    con = connect(s3)
    assert con.execute("SELECT count(*), (SELECT count(*) FROM readings_raw) FROM readings"
                       ).fetchall() == [(load.records, load.records)]
    assert con.execute("SELECT min(ts) FROM readings").fetchall()[0][0].year == 2026


def test_cli_sql_reads_s3(s3, tmp_path) -> None:
    from fleetpulse.ingest.pipeline import Pipeline

    pipe = Pipeline(s3, "cli", state_dir=tmp_path)
    load = LoadPublisher.__new__(LoadPublisher)
    load.devices, load.prefix, load.per_message = 2, "q", 3
    for i in range(4):
        pipe.handle(*load.envelope(i), LoadPublisher.T0)
    pipe.flush()
    r = subprocess.run([sys.executable, "-m", "fleetpulse", "sql", "--data", s3,
                        "SELECT count(*) AS n FROM readings", "--format", "csv"],
                       capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["n", "12"]
    r = subprocess.run([sys.executable, "-m", "fleetpulse", "catalog", "--data", s3,
                        "--out", str(tmp_path / "c.duckdb")],
                       capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    # Offline, DuckDB's httpfs cannot be installed: one line that says what to do.
    if r.returncode != 0:
        assert "needs DuckDB's httpfs extension" in r.stderr and "Traceback" not in r.stderr


def test_a_write_that_fails_part_way_leaves_no_object(s3, monkeypatch) -> None:
    """pyarrow's object stream completes its upload when closed, even after an error:
    a failure in the middle of a write must not publish a truncated file."""
    import pyarrow as pa

    from fleetpulse.ingest import store as store_module

    store = Store(s3)
    table = pa.table({"x": list(range(1000))})
    real_write = store_module.pq.write_table

    def fails_midway(t, where, **kw):
        real_write(t, where, **kw)
        where.write(b"trailing garbage")
        raise OSError("connection reset in the middle of the upload")

    monkeypatch.setattr(store_module.pq, "write_table", fails_midway)
    with pytest.raises(OSError, match="connection reset"):
        store.write_table("readings/date=2026-01-01/part-a.parquet", table)
    assert store.files("readings") == []

    class BrokenStream:
        def __init__(self, inner):
            self.inner = inner

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.inner.close()  # what pyarrow does: the upload completes

        def write(self, data):
            self.inner.write(data[: len(data) // 2])
            raise OSError("upload failed after half the bytes")

    monkeypatch.setattr(store_module.pq, "write_table", real_write)
    real_open = store.fs.open_output_stream
    monkeypatch.setattr(store, "fs", _FsWrapper(store.fs, lambda p: BrokenStream(real_open(p))))
    with pytest.raises(OSError, match="half the bytes"):
        store.write_table("readings/date=2026-01-01/part-b.parquet", table)
    assert store.files("readings") == []


class _FsWrapper:
    def __init__(self, fs, opener):
        self._fs, self._opener = fs, opener

    def open_output_stream(self, path):
        return self._opener(path)

    def __getattr__(self, name):
        return getattr(self._fs, name)


def test_device_attributes_in_object_storage(s3, tmp_path) -> None:
    """`devices export` writes the attributes into an S3 dataset, and its
    device_attributes view reads them (through pyarrow, as the tables)."""
    from conftest import fleetpulse

    from fleetpulse.gateway.registry import Registry

    reg = Registry(tmp_path / "reg")
    reg.add("d1", "plug")
    reg.set_attributes({"d1": {"region": "eu-west"}}, "2026-01-01")
    reg.set_attributes({"d1": {"region": "eu-north"}}, "2026-02-01")
    assert connect(s3).sql("SELECT count(*) FROM device_attributes").fetchall() == [(0,)]
    r = fleetpulse("devices", "export", "--data", s3, "--registry", str(tmp_path / "reg"))
    assert r.returncode == 0, r.stderr
    rows = connect(s3).sql("SELECT value, valid_to IS NULL FROM device_attributes "
                           "ORDER BY valid_from").fetchall()
    assert rows == [("eu-west", False), ("eu-north", True)]
