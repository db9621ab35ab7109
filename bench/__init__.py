"""Benchmark of the cleanup job against a shell one-liner, the machine's limit and a naive script.

Run `python -m bench.run --help` (or `make bench`); see docs/performance.md for the figures.
"""
