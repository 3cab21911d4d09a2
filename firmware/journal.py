# The offline journal: envelopes that could not be sent, kept on flash across reboots
# and sent again oldest first. It is a folder of small append-only segment files, so
# flash is only ever appended to and whole files deleted (no rewrites); a segment is
# deleted once every envelope in it was acknowledged. When the journal outgrows its
# bound, the oldest segment is dropped and its records are counted, never lost silently.
#
# A line is "<T|U><records> <envelope JSON>": T when the envelope is ready to publish
# byte for byte, U when its records still carry uptime instead of time.
import os

from flash import ensure_dir


class Journal:
    def __init__(self, root, max_bytes, rbuf, seg_bytes=4096):
        self.root = root
        self.rbuf = rbuf  # lines are read back into this buffer (buffers.READ)
        self.max_bytes = max_bytes
        self.seg_bytes = seg_bytes
        ensure_dir(root)
        self.segs = sorted(int(n[:-3]) for n in os.listdir(root) if n.endswith(".jl"))
        self.sizes = {}
        for n in self.segs:
            self.sizes[n] = os.stat(self._path(n))[6]
        # A new boot appends to a new segment, so a line torn by a power cut stays the
        # last line of an old segment, where the reader skips it.
        self.head = (self.segs[-1] + 1) if self.segs else 0
        self.rseg = None  # segment being read, its next offset, whether it hit the end
        self.rpos = 0
        self.reof = False
        self.pending = {}  # segment -> envelopes handed out and not yet acknowledged

    def _path(self, n):
        return "%s/%d.jl" % (self.root, n)

    def empty(self):
        return not self.segs

    def bytes(self):
        return sum(self.sizes.values())

    def append(self, line):
        """Store one envelope line (bytes); return how many records had to be dropped."""
        if self.segs and self.segs[-1] == self.head and self.sizes[self.head] >= self.seg_bytes:
            self.head += 1
        if not self.segs or self.segs[-1] != self.head:
            self.segs.append(self.head)
            self.sizes[self.head] = 0
        with open(self._path(self.head), "ab") as f:
            f.write(line)
            f.write(b"\n")
        self.sizes[self.head] += len(line) + 1
        dropped = 0
        while self.bytes() > self.max_bytes and len(self.segs) > 1:
            dropped += self._drop(self.segs[0])
        return dropped

    def _drop(self, n):
        count = 0
        try:
            with open(self._path(n), "rb") as f:
                for line in f:
                    if line.endswith(b"\n"):
                        count += int(line[1:line.index(b" ")])
        except (OSError, ValueError):
            pass
        self._delete(n)
        return count

    def _delete(self, n):
        try:
            os.remove(self._path(n))
        except OSError:
            pass
        self.segs.remove(n)
        del self.sizes[n]
        self.pending.pop(n, None)
        if self.rseg == n:
            self.rseg, self.rpos, self.reof = None, 0, False

    def rewind(self):
        """Forget what was handed out but not acknowledged: read again from the oldest
        segment's start (at least once; ingest de-duplicates on record identity)."""
        self.rseg, self.rpos, self.reof = None, 0, False
        self.pending = {}

    def next(self):
        """The next envelope line (a view of the read buffer, valid until the next
        call) and a token to ack it with, or None."""
        while True:
            if self.rseg is None:
                if not self.segs:
                    return None
                self.rseg, self.rpos, self.reof = self.segs[0], 0, False
            n = self.rseg
            got = 0
            try:
                with open(self._path(n), "rb") as f:
                    f.seek(self.rpos)
                    got = f.readinto(self.rbuf) or 0
            except OSError:
                pass
            buf = self.rbuf
            end = 0
            while end < got and buf[end] != 10:
                end += 1
            if end < got:
                self.rpos += end + 1
                self.pending[n] = self.pending.get(n, 0) + 1
                return memoryview(buf)[:end], n
            # end of this segment (a torn last line is skipped)
            if n == self.segs[-1] and n == self.head:
                self.reof = True
                self._maybe_done(n)
                return None
            self.reof = True
            if not self._maybe_done(n):
                return None  # wait for its acks before moving on
            # the segment was deleted; the loop picks the next one

    def ack(self, token):
        n = token
        if n in self.pending:
            self.pending[n] -= 1
            self._maybe_done(n)

    def _maybe_done(self, n):
        if self.rseg == n and self.reof and not self.pending.get(n):
            self._delete(n)
            if n == self.head:
                self.head += 1
            return True
        return False
