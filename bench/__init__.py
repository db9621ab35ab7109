"""Benchmarks.

- `bench.run`: the cleanup job end to end against a shell one-liner, the machine's limit and
  a naive script (`bench.naive`), on identical data, or with nothing expired against a
  one-op Dagster job (`bench.trivial_job`); `make bench`, docs/performance.md. Its parts:
  `bench.data` (rows and objects), `bench.contenders` (how each contender runs),
  `bench.measure` (wall time and memory), `bench.eventlog` (a run's steps from its event
  log), `bench.checks` (the outcome check), `bench.figures` (ratios and targets),
  `bench.report` (the page), `bench.moto_server`, `bench.azurite`, `bench.pgurls`,
  `bench.baselines`.
- `bench.object_store_deletes`: the S3 and Azure backends' batched deletes against one
  request per key, on the emulators.
"""
