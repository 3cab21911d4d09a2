"""Loads tests/vectors/*.json: the contract's test vectors, shared by every producer and
consumer test. The format is described in tests/vectors/README.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTOR_DIR = Path(__file__).with_name("vectors")


def load_vectors() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(VECTOR_DIR.glob("*.json"))]


def preceding_payloads(v: dict[str, Any]) -> list[bytes]:
    """Messages sent on the same topic before the vector's own (state such as learned
    columns depends on them)."""
    return [json.dumps(doc, separators=(",", ":")).encode() for doc in v.get("preceded_by", [])]


def payload_bytes(v: dict[str, Any], seq: int | None = None) -> bytes:
    """The vector's payload; `seq` gives an envelope another identity, so that vectors
    sharing one ingest are not dropped as redeliveries of each other."""
    if "payload_text" in v:
        return v["payload_text"].encode()
    if "payload_hex" in v:
        return bytes.fromhex(v["payload_hex"])
    doc = v["payload"]
    if seq is not None and isinstance(doc, dict) and "seq" in doc:
        doc = {**doc, "seq": seq}
    if "repeat_records" in v:
        doc = {**doc, "records": doc["records"][:1] * v["repeat_records"]}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    if "pad_to_bytes" in v:
        filler = v["pad_to_bytes"] - len(raw) - len(',"pad":""')
        raw = json.dumps({**doc, "pad": "x" * filler}, separators=(",", ":")).encode()
        assert len(raw) == v["pad_to_bytes"]
    return raw
