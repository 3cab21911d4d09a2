# The C module's interface (ingest/native_v1.c), for the type checker.
MAX_RECORDS: int
MIN_TIME_MS: int
MAX_CLOCK_AHEAD_MS: int

# per column: (Arrow type name, values, a byte per row saying "not null" or None,
# string bytes or None)
_Column = tuple[str, bytes, bytes | None, bytes | None]

class Columns:
    def add(self, device_id: str, payload: bytes, received_ms: int
            ) -> tuple[str | None, int, int, int] | None: ...
    def undo(self) -> None: ...
    def take(self) -> dict[str, tuple[int, dict[str, _Column]]]: ...
    def __len__(self) -> int: ...
