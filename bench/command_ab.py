"""A `fleetpulse` command as the code at a git revision runs it against the working tree's,
alternated process by process so that both see the same machine.

    .venv/bin/python bench/command_ab.py --against HEAD~1 --runs 9 [--rollups DATA] -- \\
        metrics experiment --key bench --data /work/ab-full/compacted

The revision is checked out into a temporary git worktree and imported in place of the
installed package (a `fleetpulse` folder laid out as pyproject.toml's package-dir maps
it, first on PYTHONPATH); the working tree's runs use the installed package. Both runs'
stdout must be equal before anything is timed. --rollups first writes into the dataset
the rollups the revision's definitions name and the dataset lacks, as the revision's
compaction would (a rollup whose definition changed has a folder of its own, so neither
side reads the other's). Medians of --runs wall seconds, interpreter start included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def overlay(revision: str, into: Path) -> Path:
    """A folder to put first on PYTHONPATH that imports `fleetpulse` from `revision`."""
    tree = into / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), revision],
                   cwd=ROOT, check=True)
    dirs = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    # the subpackages live beside, not inside, the top package's folder: a copy of that
    # folder with each linked in
    pkg = into / "path" / "fleetpulse"
    shutil.copytree(tree / dirs["fleetpulse"], pkg)
    for name, src in dirs.items():
        if name != "fleetpulse":
            (pkg / name.split(".", 1)[1]).symlink_to(tree / src)
    return pkg.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", required=True, help="the git revision to compare with")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--rollups", metavar="DATA", help="write the revision's missing "
                    "rollups into this dataset first")
    ap.add_argument("command", nargs="+", help="fleetpulse's arguments, after --")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "fleetpulse", *args.command]
    with tempfile.TemporaryDirectory(prefix="command-ab-") as tmp:
        try:
            path = overlay(args.against, Path(tmp))
            env = {"old": {**os.environ, "PYTHONPATH": str(path)}, "new": dict(os.environ)}
            if args.rollups:
                subprocess.run([sys.executable, "-c",
                                "import sys; from fleetpulse.analytics.rollups import "
                                "write_rollups; from fleetpulse.ingest.store import Store; "
                                "write_rollups(Store(sys.argv[1]))", args.rollups],
                               env=env["old"], check=True)
            outs = {k: subprocess.run(cli, env=e, capture_output=True, text=True, check=True
                                      ).stdout for k, e in env.items()}
            if outs["old"] != outs["new"]:
                raise SystemExit("the two revisions answer differently:\n"
                                 f"{args.against}:\n{outs['old'][:2000]}\n"
                                 f"working tree:\n{outs['new'][:2000]}")
            times: dict[str, list[float]] = {"old": [], "new": []}
            for i in range(args.runs):
                for k in (("old", "new") if i % 2 else ("new", "old")):
                    t = time.perf_counter()
                    subprocess.run(cli, env=env[k], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, check=True)
                    times[k].append(time.perf_counter() - t)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp) / "tree")],
                           cwd=ROOT, capture_output=True)
    old, new = (statistics.median(times[k]) for k in ("old", "new"))
    print(f"fleetpulse {' '.join(args.command)}\n  {args.against}: {old:.3f} s   "
          f"working tree: {new:.3f} s   ratio {new / old:.2f}")


if __name__ == "__main__":
    main()
