# The two envelope-sized buffers, allocated first thing at boot while the heap is still
# in one piece: after hours of running it is too fragmented to promise a free 2 KiB
# block, and a restart of the application reuses them instead of allocating again.
LINE_BYTES = 2048  # the largest envelope line (a batch closes well before this)
ENVELOPE = bytearray(LINE_BYTES)  # app.py builds every envelope here
READ = bytearray(LINE_BYTES)  # journal.py reads every line back into this
