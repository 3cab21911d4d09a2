# `make demo` and `make test` each install what they need, then run.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEV     := $(VENV)/.installed-dev
DUCKDB1 := $(VENV)/duckdb1/.installed
STUBS   := $(VENV)/stubs/.installed
PYTHON  ?= python3
SUDO    := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test lint bench clean deps test-deps mosquitto chromium

# make demo ARGS="--devices 1000 --days 60" passes its flags on (fleetpulse demo --help)
demo: deps
	$(VENV)/bin/fleetpulse demo $(ARGS)

test: test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy core gateway ingest analytics simulators firmware/tools
	$(VENV)/bin/pytest

lint: $(DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy core gateway ingest analytics simulators firmware/tools

deps: $(STAMP) mosquitto

# the demo needs only the runtime; tests and lint add the dev extras
test-deps: deps $(DEV) chromium $(STUBS) $(DUCKDB1)

# DuckDB 1.x as BI tools bundle it (the CLI and duckdb-engine, as Superset connects), for
# the test that opens our catalog with it; a venv of its own beside DuckDB 2.
$(DUCKDB1): $(STAMP)
	$(PYTHON) -m venv $(VENV)/duckdb1
	$(VENV)/duckdb1/bin/python -m pip install -q --disable-pip-version-check duckdb-cli==1.5.6 duckdb==1.5.6 duckdb-engine==0.17.0 'sqlalchemy>=2,<3'
	@touch $@

# MicroPython stubs for the firmware type-check: one folder per board, since both
# packages install top-level modules of the same names (machine, network, ...).
$(STUBS): pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check --upgrade --target $(VENV)/stubs/esp32 micropython-esp32-stubs~=1.29.0
	$(PY) -m pip install -q --disable-pip-version-check --upgrade --target $(VENV)/stubs/rp2 micropython-rp2-rpi-pico-w-stubs~=1.29.0
	@touch $@

$(STAMP): pyproject.toml ingest/native_v1.c ingest/native_mqtt.c
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "fleetpulse needs Python 3.11 or newer as $(PYTHON) (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
	@# ingest's C modules are compiled at install: a C compiler and Python's headers
	@{ command -v cc >/dev/null 2>&1 && $(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; } || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing a C compiler and Python's headers with apt-get (ingest's decoder is C)"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gcc python3-dev >/dev/null; \
	  else echo "fleetpulse compiles a C module at install: install a C compiler and the headers of $(PYTHON)" >&2; exit 1; fi; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing python3-venv with apt-get"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv && \
	    rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	  else echo "cannot create a virtualenv: install the venv module for $(PYTHON)" >&2; exit 1; fi; }
	$(PY) -m pip install -q --disable-pip-version-check -e .
	@touch $(STAMP)

$(DEV): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(DEV)

mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto with apt-get"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	  else \
	    echo "mosquitto is not installed and this system has no apt-get: install mosquitto 2.x (brew install mosquitto, dnf install mosquitto, ...) and run make again" >&2; \
	    exit 1; \
	  fi; }

# The dashboard test drives Debian's chromium (a browser download is not possible here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get (for the dashboard test)"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is not installed and this system has no apt-get: install chromium for the dashboard test" >&2; \
	    exit 1; \
	  fi; }

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts
