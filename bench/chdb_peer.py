"""Runs the chdb side of bench/analytics_peers.py in an interpreter that has chdb
(`pip install chdb`), kept out of the project's venv: chdb brings pandas, and
pyarrow.dataset imports pandas whenever it is installed, which alone would add 0.3 s
to every `fleetpulse` process the bench times.

    PY bench/chdb_peer.py RUNS < questions.json > answers.json

Input: a JSON list of SQL texts. Output: per text, its rows as CSV cells and the median
wall seconds of RUNS runs (after one run whose answer is returned: the engine's start is
not counted, in chdb's favour).
"""

import csv
import io
import json
import statistics
import sys
import time

import chdb  # type: ignore[import-not-found]


def main() -> None:
    runs = int(sys.argv[1])
    out = []
    for sql in json.load(sys.stdin):
        sql += " SETTINGS session_timezone = 'UTC'"
        rows = list(csv.reader(io.StringIO(str(chdb.query(sql, "CSV")))))
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            chdb.query(sql, "CSV")
            times.append(time.perf_counter() - t)
        out.append({"rows": rows, "seconds": statistics.median(times) if times else None})
    json.dump({"version": chdb.__version__, "answers": out}, sys.stdout)


if __name__ == "__main__":
    main()
