"""Prometheus /metrics for one ingest process, read from its live counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .service import IngestService


class _IngestCollector(Collector):
    def __init__(self, service: IngestService) -> None:
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.service.stats
        labels = ["client_id"]
        cid = [s.client_id]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(f"fleetpulse_ingest_{name}", doc, labels=labels)
            c.add_metric(cid, value)
            return c

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(f"fleetpulse_ingest_{name}", doc, labels=labels)
            g.add_metric(cid, value)
            return g

        yield counter("messages_received", "MQTT messages taken (durable and acked)", s.messages)
        yield counter("records_written", "rows written to Parquet (readings + events)",
                      s.readings + s.events)
        yield counter("type_conflicts", "learned-column values of another type, kept in extra",
                      s.type_conflicts)
        yield counter("duplicates_dropped", "redelivered messages dropped by identity",
                      s.duplicates)
        q = CounterMetricFamily("fleetpulse_ingest_quarantined",
                                "messages or records refused, by reason",
                                labels=["client_id", "reason"])
        for reason, n in sorted(s.rejected_by_reason.items()):
            q.add_metric([s.client_id, reason], n)
        yield q
        yield counter("files_written", "Parquet files written", s.files_written)
        yield counter("store_errors", "failed writes to the log or the Parquet store",
                      s.store_errors)
        yield gauge("flush_latency_seconds", "duration of the last Parquet flush",
                    s.last_flush_seconds)
        yield gauge("buffered_records", "rows waiting for the next flush",
                    self.service.pipeline.buffered)
        yield gauge("oldest_unacked_seconds", "age of the oldest message received but not "
                    "yet acknowledged", self.service.unacked_age())
        yield gauge("connected", "1 while subscribed to the broker", int(s.subscribed))
        yield gauge("store_ok", "0 while the store cannot be written", int(s.store_ok))


def serve_metrics(service: IngestService, port: int, addr: str = "127.0.0.1") -> None:
    REGISTRY.register(_IngestCollector(service))
    start_http_server(port, addr=addr)
