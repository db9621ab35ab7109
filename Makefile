# Two commands do all the set-up on a fresh machine:
#   make demo   run the cleanup job on the embedded default (SQLite + a local folder)
#   make test   run the whole test suite (needs PostgreSQL on 127.0.0.1:5432, see README)
#   make bench  the benchmark (docs/performance.md); e.g. make bench BENCH_ARGS="--rows 1000000"
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The UI tests drive Debian's Chromium (never a browser a tool downloads itself).
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint bench

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m snapshot_ops.demo

$(CHROMIUM):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

test: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest $(PYTEST_ARGS)

BENCH_ARGS ?= --backend fs --rows 100000

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check snapshot_ops snapshot_ops_tests bench
	$(VENV)/bin/ruff format --check snapshot_ops snapshot_ops_tests bench
