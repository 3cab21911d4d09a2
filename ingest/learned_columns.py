"""Columns that newer firmware adds, learned from the data instead of declared.

A record field the contract does not name, with a scalar value and a column-like name,
becomes a column of its table: numbers as DOUBLE, strings as VARCHAR, booleans as
BOOLEAN. The first type seen is kept (in DATA/_schema/<table>.json, so it survives
restarts); a later value of another type is a type conflict: the record is kept, that
value goes into the record's JSON `extra` column, and the learned column stays typed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from .schema import TABLES

_TYPES = {"double": pa.float64(), "string": pa.string(), "boolean": pa.bool_()}


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
        self._types: dict[str, dict[str, str]] = {}
        self._dirty = False
        # Learned columns that rows buffered since the table's last write carry.
        self._present: dict[str, set[str]] = {t: set() for t in TABLES}
        for table in TABLES:
            try:
                self._types[table] = json.loads((self._dir / f"{table}.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                self._types[table] = {}

    def add(self, table: str, row: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Move the new fields into the row as columns; return the fields whose type
        conflicts with their learned column, left out of the row."""
        known = self._types[table]
        conflicting: dict[str, Any] = {}
        for name, value in new.items():
            vtype = value_type(value)
            have = known.get(name)
            if have is None:
                known[name] = vtype  # type: ignore[assignment]  # callers pass scalars only
                self._dirty = True
            elif have != vtype:
                conflicting[name] = value
                continue
            row[name] = float(value) if vtype == "double" else value
            self._present[table].add(name)
        return conflicting

    def schema(self, table: str) -> pa.Schema:
        """The declared schema plus the learned columns the buffered rows use."""
        present = self._present[table]
        if not present:
            return TABLES[table]
        learned = self._types[table]
        return pa.schema([*TABLES[table],
                          *(pa.field(k, _TYPES[learned[k]]) for k in sorted(present))])

    def written(self, table: str) -> None:
        self._present[table] = set()

    def present(self, table: str, schema: pa.Schema) -> None:
        """Rows written with `schema` are buffered again (their write failed)."""
        declared = set(TABLES[table].names)
        self._present[table] |= {n for n in schema.names if n not in declared}

    def save(self) -> None:
        if not self._dirty:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        for table, types in self._types.items():
            if types:
                path = self._dir / f"{table}.json"
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(types, indent=1, sort_keys=True))
                os.replace(tmp, path)
        self._dirty = False
