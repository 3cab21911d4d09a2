"""A burst that ends reaches Parquet when the stream goes quiet, not after the age limit;
a trickle below the idle minimum still waits for the age limit (no file per message)."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import LoadPublisher, dataset_counts, wait_until

from fleetpulse.gateway.broker import Broker
from fleetpulse.ingest.service import IDLE_FLUSH_MIN


def test_the_end_of_a_burst_is_flushed_when_the_stream_goes_quiet(
        broker: Broker, start_ingest, tmp_path: Path) -> None:
    data = tmp_path / "data"
    # the age limit is far beyond the test's patience: only the idle flush can pass it
    ingest = start_ingest(data, args=["--flush-seconds", "600", "--flush-idle", "0.3"])
    ingest.wait_subscribed()
    small = LoadPublisher(broker, messages=5, per_message=10, devices=5, prefix="trickle")
    small.start().wait_acked(30)
    burst = LoadPublisher(broker, messages=300, per_message=10, devices=30, prefix="burst")
    assert burst.records + small.records >= IDLE_FLUSH_MIN
    t0 = time.monotonic()
    burst.start().wait_acked(60)
    wait_until("the burst in Parquet", lambda: dataset_counts(data)[1] == 3050, timeout=30)
    assert time.monotonic() - t0 < 60  # far under the 600 s age limit
    small.close()
    burst.close()


def test_a_small_tail_of_a_burst_that_filled_files_is_flushed_when_quiet(
        broker: Broker, start_ingest, tmp_path: Path) -> None:
    """The rows left after the row limit's last flush are the end of a burst too, even
    under the idle minimum (seen: the last 0.5% of a 1M-row burst waited out the 5 s age
    limit)."""
    data = tmp_path / "data"
    ingest = start_ingest(data, args=["--flush-seconds", "600", "--flush-idle", "0.3",
                                      "--flush-rows", "2000"])
    ingest.wait_subscribed()
    burst = LoadPublisher(broker, messages=250, per_message=10, devices=25, prefix="tail")
    burst.start().wait_acked(60)
    # 2500 rows: the row limit writes about 2000, the rest (under IDLE_FLUSH_MIN) follows
    # only if the quiet stream flushes it
    wait_until("the whole burst in Parquet", lambda: dataset_counts(data)[1] == 2500,
               timeout=30)
    burst.close()


def test_a_trickle_waits_for_the_age_limit(broker: Broker, start_ingest,
                                           tmp_path: Path) -> None:
    data = tmp_path / "data"
    ingest = start_ingest(data, args=["--flush-seconds", "3", "--flush-idle", "0.2"])
    ingest.wait_subscribed()
    small = LoadPublisher(broker, messages=3, per_message=10, devices=3, prefix="drip")
    small.start().wait_acked(30)
    acked = time.monotonic()
    wait_until("the trickle in Parquet", lambda: dataset_counts(data)[1] == 30, timeout=30)
    # 30 rows are under the idle minimum: written by the 3 s age limit, not the 0.2 s gap
    assert time.monotonic() - acked >= 2.0
    small.close()
