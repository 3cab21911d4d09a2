"""The ingest service: MQTT telemetry -> write-ahead log -> acknowledgement -> Parquet.

Order of events for every batch the socket delivers:
  1. a thread appends the raw messages to the write-ahead log and fdatasyncs it
     (group commit) while
  2. they are validated into buffered rows;
  3. once both are done, PUBACK them: only now may the broker forget them.
Buffered rows become Parquet when there are `flush_rows` of them, when the oldest is
`flush_seconds` old, or when a burst has ended (no message for `flush_idle_s` with at
least IDLE_FLUSH_MIN buffered); the log segments they came from are then deleted. A crash at any
point loses nothing acknowledged: leftover segments are replayed at the next start.

If the log or the Parquet store cannot be written (disk full, store down), ingest
stops reading and acknowledging, says so in one log line, and retries; the broker
keeps the messages meanwhile (persistent session, QoS 1) and redelivers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fleetpulse.errors import UserError
from fleetpulse.mqtt import REFUSED_LOGIN, refused_login, say_up

from . import parquet_writer, stats
from .contract import TELEMETRY_FILTER
from .mqtt_subscriber import MqttConnectError, MqttError, Received, Subscriber
from .pipeline import Batch, Pipeline
from .store import Store
from .wal import WriteAheadLog, read_segment

log = logging.getLogger("fleetpulse.ingest")
OUTAGE_MERGE_S = 30.0
# Buffered rows, in units of flush_rows, beyond which reading waits for the running flush.
# A write runs while the next rows are buffered, so up to twice this is held: at 4, a
# drained backlog of one-record messages peaked at 208 MB (bench/RESULTS.md).
MAX_BUFFERED_FLUSHES = 2
# A quiet stream flushes early only with this much buffered: a burst that ended reaches
# Parquet at once, while a trickle of single messages still makes one file per
# flush_seconds, not one per gap.
IDLE_FLUSH_MIN = 1000
TICK_S = 0.1


@dataclass
class IngestConfig:
    host: str
    port: int
    data: str | Path  # a directory or s3://bucket/prefix
    client_id: str = "fleetpulse-ingest"
    # Write-ahead log, counters, learned columns: always on local disk. Defaults to the
    # data directory when that is local; required for object storage.
    state_dir: Path | None = None
    flush_rows: int = 50_000
    flush_seconds: float = 5.0
    # 0.05 s: ten times the gap between the socket's batches in a burst (~5 ms), so the
    # end of a burst reaches Parquet soon: with 0.2, a 1M-record burst of 1.2 s waited
    # out the gap for 15% of its time to the last row (bench/RESULTS.md). Firing early
    # costs only a smaller file, never under IDLE_FLUSH_MIN rows (0 turns it off).
    flush_idle_s: float = 0.05
    session_expiry_s: int = 7 * 24 * 3600
    shared_group: str | None = None
    username: str | None = None
    password: str | None = None
    metrics_port: int | None = None
    keepalive: int = 30


class StoreError(Exception):
    """The write-ahead log or the Parquet store cannot be written."""


class IngestService:
    def __init__(self, cfg: IngestConfig) -> None:
        self.cfg = cfg
        self.store = Store(cfg.data)
        if self.store.local:
            Path(self.store.root).mkdir(parents=True, exist_ok=True)
        self.state_dir = cfg.state_dir or Path(self.store.root)
        if not self.store.local and cfg.state_dir is None:
            raise ValueError("a dataset in object storage needs a local state directory")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pipeline = Pipeline(self.store, cfg.client_id, self.state_dir)
        self.stats = self.pipeline.stats
        self.wal = WriteAheadLog(self.state_dir / "_wal" / cfg.client_id)
        self.topic_filter = (f"$share/{cfg.shared_group}/{TELEMETRY_FILTER}"
                             if cfg.shared_group else TELEMETRY_FILTER)
        self._store_ok = asyncio.Event()
        self._store_ok.set()
        # A store that fails again soon after recovering (a nearly full disk: each flush
        # frees a little room) is one outage, said once, not a line per cycle.
        self._recovered_at = -OUTAGE_MERGE_S
        self._outage_said = False
        self._batch_started: float | None = None
        self._last_batch_at = 0.0
        self._big_burst = False  # the stream filled a file by row count since it was quiet
        self._flush_lock = asyncio.Lock()
        self._flushing: asyncio.Task[bool] | None = None
        self._session_marker = self.state_dir / "_ingest" / f"{cfg.client_id}.session"
        self._wal_sync = ThreadPoolExecutor(1, thread_name_prefix="wal-sync")
        self._syncing: asyncio.Future[None] | None = None

    # -- durability -----------------------------------------------------------------

    def recover(self) -> None:
        """Replay what a crash left in the write-ahead log; remove partial Parquet files."""
        removed = (parquet_writer.remove_leftovers(Path(self.store.root), self.cfg.client_id)
                   if self.store.local else 0)
        # and what a stopped compaction left (compaction's own start does the same)
        self.store.delete(self.store.leftover_superseded())
        segments = self.wal.segments()
        for path in segments:
            n = 0
            for received_ms, topic, payload in read_segment(path):
                self.pipeline.handle(topic, payload, received_ms)
                n += 1
            # Same name as the flush the crash interrupted would have used: a file it
            # managed to write is replaced, not duplicated.
            self.pipeline.flush(name=self._flush_name(path))
            self.wal.delete_through(path)
            log.info("replayed %d messages from %s", n, path.name)
        if removed or segments:
            log.warning("recovered from an unclean stop: replayed %d log segments, removed %d "
                        "partial files", len(segments), removed)

    def close(self) -> None:
        self.wal.close()
        self._wal_sync.shutdown()

    def _flush_name(self, segment: Path) -> str:
        return f"{self.cfg.client_id}-{segment.stem}"

    async def flush(self) -> bool:
        """Write buffered rows; True when nothing is left buffered. The Parquet write runs
        in a thread, so the event loop goes on reading, logging and acknowledging (and
        pinging the broker) while a slow store takes its time."""
        async with self._flush_lock:
            await self._wal_synced()  # never close a segment under its pending sync
            return await self._write(*self._detach())

    def _detach(self) -> tuple[Batch | None, Path | None]:
        """Close the log segment and take what is buffered, to be written by _write().
        The caller holds the flush lock, and no log write is waiting for its sync."""
        segment = self.wal.rotate()
        if not self.pipeline.buffered and segment is None:
            return None, None
        return self.pipeline.detach(name=self._flush_name(segment) if segment else None), segment

    async def _write(self, batch: Batch | None, segment: Path | None) -> bool:
        """Write a detached batch in a thread; then delete the log segments it covers."""
        if batch is None:
            return True
        write = asyncio.ensure_future(asyncio.to_thread(self.pipeline.write, batch))
        cancelled = False
        while not write.done():
            # A stop that comes mid-write cannot stop the thread: wait for it, so the
            # batch is accounted for once. Restored while its thread still wrote, the
            # stop's own flush raced that thread for the same file names.
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                cancelled = True
            except BaseException:
                pass  # the write's own error: taken from the future below
        error = write.exception()
        if error is not None:
            # whatever went wrong, the rows go back: dropped here, a later flush would
            # delete the log segment that still holds them
            self.pipeline.restore(batch)
            if not isinstance(error, OSError):
                raise error
            self._store_failed(f"cannot write Parquet to {self.store} "
                               f"({error.strerror or error})")
        else:
            self.pipeline.written(batch)
            if segment is not None:
                self.wal.delete_through(segment)
        if cancelled:
            raise asyncio.CancelledError
        return error is None

    async def _flush_full(self) -> None:
        """Called between batches once `flush_rows` are buffered: detach them now and
        write them in the background. Done here, not by a task, because a task's flush
        must first wait for the log's pending sync, and under a steady stream there is
        always one: it waited until the buffer hit its limit, and then ingest stood still
        for the whole write (bench/RESULTS.md)."""
        limit = MAX_BUFFERED_FLUSHES * self.cfg.flush_rows
        if self._flush_lock.locked() and self.pipeline.buffered < limit:
            return  # a write is under way; the next batch looks again
        # Free, this returns at once; held, the store is slower than the fleet: wait
        # rather than grow.
        await self._flush_lock.acquire()
        try:
            await self._wal_synced()  # none is pending between batches: returns at once
            batch, segment = self._detach()
        except BaseException:
            self._flush_lock.release()
            raise
        self._flushing = asyncio.create_task(self._write_then_release(batch, segment))

    async def _write_then_release(self, batch: Batch | None, segment: Path | None) -> bool:
        try:
            return await self._write(batch, segment)
        finally:
            self._flush_lock.release()

    def _wal_failed(self, e: OSError) -> StoreError:
        self._store_failed(f"cannot write the write-ahead log under {self.state_dir} "
                           f"({e.strerror})")
        return StoreError(str(e))

    def _probe_store(self) -> bool:
        """Can the write-ahead log's disk take a write again?"""
        probe = self.wal.directory / ".probe"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _store_failed(self, what: str) -> None:
        self.stats.store_errors += 1
        new_outage = time.monotonic() - self._recovered_at > OUTAGE_MERGE_S
        if self._store_ok.is_set() and (new_outage or not self._outage_said):
            log.error("%s: not acknowledging new messages (the broker keeps them); retrying",
                      what)
            self._outage_said = True
        self._store_ok.clear()
        self.stats.store_ok = False

    def _store_recovered(self) -> None:
        if not self._store_ok.is_set():
            self._recovered_at = time.monotonic()
            log.info("store writable again: resuming")
        self._store_ok.set()
        self.stats.store_ok = True

    # -- MQTT -------------------------------------------------------------------------

    async def consume(self) -> None:
        cfg = self.cfg
        backoff = 0.2
        while True:
            await self._store_ok.wait()
            sub = Subscriber(cfg.host, cfg.port, cfg.client_id, clean_start=False,
                             session_expiry=cfg.session_expiry_s, username=cfg.username,
                             password=cfg.password, keepalive=cfg.keepalive)
            try:
                await sub.connect()
                self._check_session(sub.session_present)
                await sub.subscribe(self.topic_filter, qos=1)
                self.stats.connects += 1
                self.stats.subscribed = True
                stats.publish(self.stats, self.state_dir)
                log.info("subscribed to %s on %s:%d", self.topic_filter, cfg.host, cfg.port)
                if self.stats.connects == 1:  # a person starting ingest sees that it is up
                    say_up("ingest", self.topic_filter, cfg.host, cfg.port,
                           f" into {cfg.data}; Ctrl-C stops")
                backoff = 0.2
                while self._store_ok.is_set():  # a failing store: stop taking messages
                    await self._take(sub, await sub.read_packets())
                    await sub.drain()
                    if self.pipeline.buffered >= cfg.flush_rows:
                        self._big_burst = True
                        await self._flush_full()
            except StoreError:
                pass
            except (OSError, MqttError, TimeoutError) as e:
                if (isinstance(e, MqttConnectError) and e.code in REFUSED_LOGIN
                        and not self.stats.connects):
                    raise refused_login(cfg.host, cfg.port, cfg.username, e) from None
                log.warning("broker %s:%d: %s; reconnecting in %.1fs", cfg.host, cfg.port,
                            e or type(e).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.stats.subscribed = False
                self._batch_started = None
                await sub.close()

    def _check_session(self, present: bool) -> None:
        """A persistent session the broker no longer has means messages published while
        ingest was away are gone (broker restarted without its store, or the session
        expired): said once per connection, loudly, and counted."""
        if present:
            return
        if self._session_marker.exists():
            self.stats.sessions_lost += 1
            log.error("the broker has no session for %s: messages published while ingest was "
                      "disconnected may be lost (broker restarted without persistence, or "
                      "--session-expiry passed)", self.cfg.client_id)
        else:
            self._session_marker.parent.mkdir(parents=True, exist_ok=True)
            self._session_marker.touch()

    async def _take(self, sub: Subscriber, received: Received) -> None:
        """Validate the batch while another thread logs it (writes it and waits for the
        disk: both were on the event loop once, bench/RESULTS.md), and ack it once both
        are done.
        Rows of a batch whose log write or sync fails stay buffered unacked: the broker
        sends those messages again and the pipeline drops the copies as duplicates."""
        self._batch_started = time.monotonic()
        now = time.time_ns() // 1_000_000
        batch = received.publishes
        self._syncing = syncing = asyncio.get_running_loop().run_in_executor(
            self._wal_sync, self.wal.append, now, received.packets)
        self.pipeline.handle_batch([(p.topic, p.payload) for p in batch], now)
        cancelled = False
        while True:
            try:
                # a stop that comes now still lets the sync finish and acks what it made
                # durable, so nothing is both buffered for Parquet and left unacked
                await asyncio.shield(syncing)
                break
            except asyncio.CancelledError:
                cancelled = True
            except OSError as e:
                raise self._wal_failed(e) from None
        sub.ack([p.packet_id for p in batch if p.packet_id])
        self._batch_started = None
        self._last_batch_at = time.monotonic()
        st = self.stats
        st.last_durable_at = time.time()
        if not st.first_message_at:
            st.first_message_at = now / 1000
        if cancelled:
            raise asyncio.CancelledError

    async def _wal_synced(self) -> None:
        """Return when no log write is waiting for its sync. A loop, since the next
        batch may be written while this waits for the one before; the caller then runs
        on without yielding, so none can start before it is done with the log."""
        while self._syncing is not None and not self._syncing.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._syncing)

    def _tick_delay(self) -> float:
        """0.1 s, or less when a burst's end is due sooner: the idle flush fires on time,
        not up to a tick late."""
        if not self._idle_flush_armed():
            return TICK_S
        return min(TICK_S, max(0.005, self._last_batch_at + self.cfg.flush_idle_s
                                      - time.monotonic()))

    def _idle_flush_armed(self) -> bool:
        """Would a quiet stream flush now? With IDLE_FLUSH_MIN rows buffered, or any
        rows left by a burst that filled a file by --flush-rows: its tail is the burst's
        end, however small, and would otherwise wait out --flush-seconds."""
        buffered = self.pipeline.buffered
        return bool(self.cfg.flush_idle_s) and (
            buffered >= IDLE_FLUSH_MIN or (self._big_burst and buffered > 0))

    def unacked_age(self) -> float:
        return 0.0 if self._batch_started is None else time.monotonic() - self._batch_started

    async def tick(self) -> None:
        last = ""
        retry_at = 0.0
        while True:
            await asyncio.sleep(self._tick_delay())
            now = time.monotonic()
            failing = not self._store_ok.is_set()
            due = self.pipeline.buffered and self.pipeline.buffer_age() >= self.cfg.flush_seconds
            quiet = now - self._last_batch_at >= self.cfg.flush_idle_s
            if self._idle_flush_armed() and not due:
                due = quiet  # the burst is over
            elif quiet and not self.pipeline.buffered:
                self._big_burst = False
            # not while a write holds the flush lock: waiting for it here would stop the
            # counters for the whole write (a slow store takes seconds a file)
            if (due or failing) and now >= retry_at and not self._flush_lock.locked():
                if await self.flush() and (not failing or self._probe_store()):
                    self._store_recovered()
                else:
                    retry_at = now + 1.0
            self.stats.wal_segments = len(self.wal.segments()) if failing else 0
            snapshot = self.stats.to_json()
            # not while a batch is counted but not yet synced and acked: a reader of the
            # counters takes `messages` as what is durable
            if snapshot != last and self._batch_started is None:
                with contextlib.suppress(OSError):  # a full disk must not stop the service
                    stats.publish(self.stats, self.state_dir)
                last = snapshot


async def run(cfg: IngestConfig, stop: asyncio.Event | None = None,
              early_stop: threading.Event | None = None) -> int:
    """Run until `stop` is set (or SIGINT/SIGTERM); return the process exit code.
    `early_stop` carries a signal that arrived before the event loop ran."""
    stop = stop or _stop_on_signals()
    service = IngestService(cfg)
    service.recover()
    if early_stop is not None and early_stop.is_set():
        stop.set()
    service.stats.state = "running"
    if cfg.metrics_port is not None:
        from .metrics_http import serve_metrics

        serve_metrics(service, cfg.metrics_port)
    tasks = [asyncio.create_task(service.consume()), asyncio.create_task(service.tick())]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({tasks[0], stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (*tasks, stopper):
        task.cancel()
    refused: UserError | None = None
    for task in (*tasks, stopper):
        try:
            await task
        except asyncio.CancelledError:
            pass
        except UserError as e:  # said once the rows it holds are safe
            refused = e
    ok = await service.flush()
    service.close()
    service.stats.subscribed = False
    service.stats.state = "stopped"
    with contextlib.suppress(OSError):
        stats.publish(service.stats, service.state_dir)
    if refused is not None:
        raise refused
    if not ok:
        log.error("%d rows could not be written; they are safe in the write-ahead log and "
                  "are written at the next start", service.pipeline.buffered)
        return 3
    log.info("stopped: %s", service.stats.to_json().replace("\n", ""))
    return 0


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
