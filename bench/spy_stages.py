"""Where ingest's threads spend their busy samples, from a py-spy record of it.

    python bench/spy_stages.py PY_SPY_TXT

PY_SPY_TXT is the collapsed-stack file the shared harness writes with `--py-spy`
(`<out>/q1-fleetpulse/py-spy.txt`). Samples waiting in epoll, in a thread pool's queue
or on a lock are idle; the event loop's busy ones are grouped by the innermost ingest
stage on the stack, the other threads' by what they do. The harness's own summary
counts a pool thread waiting in its queue as busy, which hides the event loop's share.
"""

from __future__ import annotations

import sys
from collections import Counter

IDLE = ("select (selectors.py", "_worker (concurrent/futures/thread.py:81)",
        "wait (threading.py")
# (a frame containing this, the stage): the first rule any frame matches wins
LOOP_STAGES = [("NativeColumns.add", "C decoder (native_v1 add)"),
               ("parse_packets", "MQTT read + parse"), ("read_batch", "MQTT read + parse"),
               ("read_packets", "MQTT read + parse"), ("_read_ready", "MQTT read + parse"),
               ("buffer_updated", "MQTT read + parse"),
               ("Pipeline.handle", "handle: topic, dedup key, counters"),
               ("Subscriber.ack", "PUBACK"), ("puback", "PUBACK"),
               ("tick", "tick, counters file"), ("detach", "flush on the loop (detach, seal)"),
               ("_flush_full", "flush on the loop (detach, seal)"),
               ("flush", "flush on the loop (detach, seal)")]
THREAD_STAGES = [("write_table", "Parquet writer: encode + fsync"),
                 ("WriteAheadLog.write", "log write (into the page cache)"),
                 ("WriteAheadLog.sync", "log fdatasync (waiting on the disk)"),
                 ("materialize", "Parquet writer: assembling tables"),
                 ("tables", "Parquet writer: assembling tables")]


def stage(frames: list[str], rules: list[tuple[str, str]], default: str) -> str:
    for needle, name in rules:
        if any(needle in f for f in frames):
            return name
    return default


def main(path: str) -> None:
    loop: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    idle: Counter[str] = Counter()
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        on_loop = frames[0].startswith("<module>")  # the main thread runs the event loop
        if any(i in frames[-1] for i in IDLE):
            idle["loop" if on_loop else "threads"] += n
        elif on_loop:
            loop[stage(frames, LOOP_STAGES, "event loop, the rest")] += n
        else:
            threads[stage(frames, THREAD_STAGES, "other")] += n
    total = sum(loop.values())
    print(f"event loop: {total} busy samples, {idle['loop']} idle")
    for name, n in loop.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"other threads: {sum(threads.values())} busy samples, {idle['threads']} idle")
    for name, n in threads.most_common():
        print(f"  {n:6d}  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
