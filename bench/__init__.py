"""Benchmarks.

- `bench.run`: the cleanup job end to end against a shell one-liner, the machine's limit and
  a naive script (`bench.naive`), on identical data; `make bench`, docs/performance.md.
- `bench.plan`: the simulation that checks the plan for 100 million snapshots a day.
- `bench.object_store_deletes`: the S3 and Azure backends' batched deletes against one
  request per key, on the emulators.
"""
