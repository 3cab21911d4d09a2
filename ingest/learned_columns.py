"""Columns that newer firmware adds, learned from the data instead of declared.

A record field the contract does not name, with a scalar value and a column-like name,
becomes a column of its table: numbers as DOUBLE, strings as VARCHAR, booleans as
BOOLEAN. The first type seen is kept (in DATA/_schema/<table>.json, so it survives
restarts); a later value of another type is a type conflict: the record is kept, that
value goes into the record's JSON `extra` column, and the learned column stays typed.

Several ingest workers share the file: each save merges under a lock, the type already
in the file wins, and a worker adopts the file's types for what it buffers next. Two
workers that met a new field at the same moment may still each write a file with their
own type; compaction reconciles such a column (ingest/compact.py).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from fleetpulse.files import write_replacing

from .schema import TABLES

_TYPES = {"double": pa.float64(), "string": pa.string(), "boolean": pa.bool_()}
_NAMES = {t: name for name, t in _TYPES.items()}


def merge_extra(extra: str | None, fields: dict[str, Any]) -> str:
    """The JSON `extra` of a row with `fields` added: where a value goes that its learned
    column cannot hold."""
    doc = json.loads(extra) if extra else {}
    doc.update(fields)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def value_type(v: Any) -> str | None:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "double"
    if isinstance(v, str):
        return "string"
    return None


class LearnedColumns:
    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir / "_schema"
        self._dirty = False
        # Learned columns that rows buffered since the table's last write carry, with the
        # type they were buffered as: the type of their batch, whatever a merge adopts.
        self._present: dict[str, dict[str, str]] = {t: {} for t in TABLES}
        self._types: dict[str, dict[str, str]] = {t: self._load(t) for t in TABLES}

    def _load(self, table: str) -> dict[str, str]:
        try:
            types = json.loads((self._dir / f"{table}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return types if isinstance(types, dict) else {}

    def arrow_types(self, table: str) -> dict[str, pa.DataType]:
        """The agreed type of each learned column of the table."""
        return {k: _TYPES[v] for k, v in self._types[table].items() if v in _TYPES}

    def add(self, table: str, row: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Move the new fields into the row as columns; return the fields whose type
        conflicts with their learned column, left out of the row."""
        known = self._types[table]
        present = self._present[table]
        conflicting: dict[str, Any] = {}
        for name, value in new.items():
            vtype = value_type(value)
            have = present.get(name) or known.get(name)
            if have is None:
                known[name] = vtype  # type: ignore[assignment]  # callers pass scalars only
                self._dirty = True
            elif have != vtype:
                conflicting[name] = value
                continue
            row[name] = float(value) if vtype == "double" else value
            present[name] = vtype  # type: ignore[assignment]
        return conflicting

    def schema(self, table: str) -> pa.Schema:
        """The declared schema plus the learned columns the buffered rows use."""
        present = self._present[table]
        if not present:
            return TABLES[table]
        return pa.schema([*TABLES[table],
                          *(pa.field(k, _TYPES[present[k]]) for k in sorted(present))])

    def written(self, table: str) -> None:
        self._present[table] = {}

    def present(self, table: str, schema: pa.Schema) -> None:
        """Rows written with `schema` are buffered again (their write failed)."""
        declared = set(TABLES[table].names)
        for f in schema:
            if f.name not in declared:
                self._present[table][f.name] = _NAMES[f.type]

    def save(self) -> None:
        """Merge what this process learned into the shared files, under a lock, and adopt
        what other processes learned (their earlier types win)."""
        if not self._dirty:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for table, types in self._types.items():
                on_disk = self._load(table)
                merged = {**types, **on_disk}
                if merged != on_disk:
                    write_replacing(self._dir / f"{table}.json",
                                    json.dumps(merged, indent=1, sort_keys=True))
                self._types[table] = merged
        finally:
            os.close(fd)
        self._dirty = False
