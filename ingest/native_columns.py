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


class NativeColumns(native_v1.Columns):
    """add(device_id, payload, received_ms), undo() and len() are the C type's own, called
    per message with no Python frame in between; the Arrow tables are built from its
    buffers by tables(), in the writer's thread."""

    def seal(self) -> set[str]:
        """Take no more messages; return the tables that will have rows."""
        return {name for name, n in self.rows().items() if n}

    def tables(self) -> dict[str, pa.Table]:
        """readings and events as Arrow tables (only those with rows); starts afresh."""
        taken = self.take()
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
