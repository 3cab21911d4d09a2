"""`python -m fleetpulse` runs the console script (tests and benches start it this way)."""

from .cli import main

main()
