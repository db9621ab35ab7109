# Two commands do all the set-up on a fresh machine:
#   make demo   run the cleanup job on the embedded default (SQLite + a local folder)
#   make lint   ruff and the import contracts (CI runs it before make test)
#   make test   run the whole test suite (PostgreSQL on 127.0.0.1:5432, else a private
#               cluster from the installed server package; see docs/testing.md)
#   make mutation     mutation testing of every module that decides what is deleted (long)
#   make mutation-ci  its fixed, fast subset, which `make test` also runs (docs/testing.md)
#   make bench  the benchmark (docs/performance.md); e.g. make bench BENCH_ARGS="--rows 1000000"
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The UI tests drive Debian's Chromium (never a browser a tool downloads itself).
CHROMIUM := /usr/bin/chromium
# The case-insensitive folder tests mount an NTFS volume with Debian's ntfs-3g (FUSE).
NTFS3G := /usr/bin/lowntfs-3g
# Azurite (the Azure Blob emulator the tests start), pinned in package.json; no lock file
# is kept, so npm resolves the pinned version from the registry the machine is set up for.
NODE_STAMP := node_modules/.installed

.PHONY: demo test lint bench mutation mutation-ci

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

$(NTFS3G):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y ntfs-3g

$(NODE_STAMP): package.json
	npm install --no-package-lock --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# With PYTEST_ARGS (a chosen tier or test), only pytest runs; without, the fast mutation
# subset follows the whole suite, as in CI.
test: $(STAMP) $(CHROMIUM) $(NTFS3G) $(NODE_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
	$(if $(PYTEST_ARGS),,$(PY) -m mutation.check ci)

# Mutation testing (mutation/check.py): a mutant the tests do not catch and that is not
# recorded with its reason in mutation/survivors-<set>.toml fails the command.
# MUTATION_ARGS=--update rewrites that file from the run (see its header).
mutation: $(STAMP) $(NODE_STAMP)
	$(PY) -m mutation.check full $(MUTATION_ARGS)

mutation-ci: $(STAMP)
	$(PY) -m mutation.check ci $(MUTATION_ARGS)

BENCH_ARGS ?= --backend fs --rows 100000

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

# ruff, then import-linter's contracts ([tool.importlinter] in pyproject.toml): the core
# imports neither Dagster nor snapshot_ops.defs. CI runs it before the tests (.ci/run).
lint: $(STAMP)
	$(VENV)/bin/ruff check snapshot_ops snapshot_ops_tests bench mutation
	$(VENV)/bin/ruff format --check snapshot_ops snapshot_ops_tests bench mutation
	$(VENV)/bin/lint-imports
