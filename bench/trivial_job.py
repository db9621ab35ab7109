"""The fixed-cost reference: a Dagster job of one op that does nothing.

`python -m bench.run --scenario empty` runs it as
`dagster job execute -m bench.trivial_job -j trivial_job`, on the same instance and in the
same way as the cleanup job, so the difference between the two is what the cleanup job adds
to Dagster's own cost of a run (process start, code location load, run and step events).
"""

from dagster import Definitions, in_process_executor, job, op

#: `dagster job execute -j` takes this name.
JOB_NAME = "trivial_job"


@op
def do_nothing() -> None:
    """One step, so the run writes the same kinds of events a real run does."""


# The cleanup job's default executor (SNAPSHOT_OPS_EXECUTOR unset): Dagster's own default
# would run the step in a child process and add a second interpreter start to the reference.
@job(name=JOB_NAME, executor_def=in_process_executor)
def trivial_job() -> None:
    do_nothing()


defs = Definitions(jobs=[trivial_job])
