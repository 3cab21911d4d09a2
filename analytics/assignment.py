"""Experiment assignment: the one function firmware, simulator and SQL must agree on.

bucket  = int(first 8 hex digits of sha256("<key>:<device_id>"), 16) % 10000
variant = "B" if bucket < share_b * 10000 else "A"

SQL: the `experiment_assignment(key, share_b)` macro (analytics/metrics.sql).
MicroPython: hashlib.sha256 and binascii.hexlify give the same digest.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000


def bucket(key: str, device_id: str) -> int:
    digest = hashlib.sha256(f"{key}:{device_id}".encode()).hexdigest()
    return int(digest[:8], 16) % BUCKETS


def variant(key: str, device_id: str, share_b: float = 0.5) -> str:
    return "B" if bucket(key, device_id) < share_b * BUCKETS else "A"
