"""One metric macro as metrics.sql defines it at a git revision against the working tree's,
on one connection to one dataset, alternated so that both see the same machine.

    .venv/bin/python bench/macro_ab.py --data /work/ab-full/compacted --against HEAD~1 \\
        --sql "SELECT * FROM sessions()" [--sql "SELECT * FROM sessions(segment_by := 'fw')"]

The revision's macro is created under the same name plus `_before` in the connection's
own database; each --sql is run with the macro name replaced by it, and the answers are
checked equal before anything is timed. Only the named macro is swapped: the rollups and
the other macros are the working tree's, so a revision whose macro reads a rollup column
the working tree dropped cannot be compared this way. Medians of --runs, seconds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time
from pathlib import Path

from fleetpulse.analytics.dataset import connect
from fleetpulse.analytics.sqltext import fill_constants

METRICS_SQL = "analytics/metrics.sql"


def macro_at(revision: str, name: str) -> str:
    """The CREATE statement of macro `name` in metrics.sql at `revision`, renamed, its
    {placeholders} filled as the working tree fills them."""
    text = subprocess.run(["git", "show", f"{revision}:{METRICS_SQL}"], check=True,
                          capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent).stdout
    start = text.index(f"CREATE OR REPLACE MACRO {name}(")
    # the statement ends where the next one's leading comment or CREATE begins
    nxt = re.compile(r"^(-- |CREATE )", re.M)
    body_end = text.index(";\n", start)
    m = nxt.search(text, body_end)
    end = m.start() if m else len(text)
    return fill_constants(text[start:end]).replace(f"MACRO {name}(", f"MACRO {name}_before(", 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--against", required=True, help="a git revision")
    ap.add_argument("--sql", action="append", required=True,
                    help="a query calling the macro (repeatable)")
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    names = {m for q in args.sql for m in re.findall(r"FROM (\w+)\(", q)}
    if len(names) != 1:
        ap.error("each --sql must call the same one macro: FROM name(...)")
    name = names.pop()
    con = connect(args.data)
    con.execute(macro_at(args.against, name))
    for sql in args.sql:
        before = sql.replace(f"FROM {name}(", f"FROM {name}_before(")
        if con.execute(before).fetchall() != con.execute(sql).fetchall():
            raise SystemExit(f"answers differ: {sql}")
        a: list[float] = []
        b: list[float] = []
        for _ in range(args.runs):
            for q, out in ((before, a), (sql, b)):
                t = time.perf_counter()
                con.execute(q).fetchall()
                out.append(time.perf_counter() - t)
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{sql}\n  {args.against}: {ma:.3f} s   working tree: {mb:.3f} s   "
              f"ratio {mb / ma:.2f}")


if __name__ == "__main__":
    main()
