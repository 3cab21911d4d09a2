"""Runs one mq-bridge Route from a JSON config until SIGTERM (bench/ingest_bench.py's
mq-bridge peer): all the work happens in mq-bridge's Rust core.

    python bench/mq_bridge_route.py ROUTE.json READY_FILE
"""

import json
import signal
import sys
from pathlib import Path

import mq_bridge

config, ready = sys.argv[1], Path(sys.argv[2])
route = mq_bridge.Route.from_config(json.loads(Path(config).read_text()), "ingest")
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
route.start()
ready.touch()
signal.sigwait([signal.SIGTERM, signal.SIGINT])
route.stop()
route.join()
