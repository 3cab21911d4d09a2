"""Ingest's first path: plain contract v1 envelopes into Arrow columns, in C.

native_v1.c decodes and checks a message straight into column buffers, with no Python
object per value; this wraps those buffers as Arrow arrays (no copy) at the flush. What
it declines goes on to the msgspec path (envelope_decoder.py), then the slow path.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from . import native_v1
from .accepted_columns import assemble

_TYPES = {"int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(),
          "string": pa.string()}


class NativeColumns:
    def __init__(self) -> None:
        self._cols = native_v1.Columns()
        self._sealed: dict[str, tuple[int, dict[str, native_v1._Column]]] | None = None

    def __len__(self) -> int:
        return len(self._cols)

    def add(self, device_id: str, payload: bytes, received_ms: int
            ) -> tuple[str | None, int, int, int] | None:
        """Take a message from device_id's telemetry topic; its (iid, boot, seq, sent_ms),
        or None when it is not the plain form of a valid envelope (nothing taken)."""
        return self._cols.add(device_id, payload, received_ms)

    def undo(self) -> None:
        """Drop the message the last add() took."""
        self._cols.undo()

    def seal(self) -> set[str]:
        """Take no more messages; return the tables that will have rows."""
        if self._sealed is None:
            self._sealed = self._cols.take()
        return {name for name in ("readings", "events") if self._sealed[name][0]}

    def tables(self) -> dict[str, pa.Table]:
        """readings and events as Arrow tables (only those with rows); starts afresh."""
        self.seal()
        assert self._sealed is not None
        taken, self._sealed = self._sealed, None
        n_env, env_cols = taken["envelopes"]
        env = {k: _array(n_env, *c) for k, c in env_cols.items()}
        parts = {}
        for name in ("readings", "events"):
            n, cols = taken[name]
            if n:
                owner = np.frombuffer(cols.pop("owner")[1], np.int64)
                parts[name] = (owner, {k: _array(n, *c) for k, c in cols.items()})
        return assemble(env, parts)


def _array(n: int, kind: str, values: bytes, valid: bytes | None, data: bytes | None
           ) -> pa.Array:
    """An Arrow array over the C buffers: validity bits from the bytes per row."""
    bits, nulls = None, 0
    if valid is not None:
        mask = np.frombuffer(valid, np.bool_)
        nulls = n - int(np.count_nonzero(mask))
        if nulls:
            bits = pa.py_buffer(np.packbits(mask, bitorder="little"))
    buffers = [bits, pa.py_buffer(values)]
    if data is not None:
        buffers.append(pa.py_buffer(data))
    return pa.Array.from_buffers(_TYPES[kind], n, buffers, null_count=nulls)
