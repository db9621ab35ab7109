"""The cleanup job's executor, chosen by SNAPSHOT_OPS_EXECUTOR.

SNAPSHOT_OPS_EXECUTOR says where the cleanup job's steps run (default in_process); see
`job_executor`. With `celery`, also SNAPSHOT_OPS_CELERY_BROKER (required),
SNAPSHOT_OPS_CELERY_BACKEND (default rpc://) and SNAPSHOT_OPS_CELERY_QUEUE (default dagster).
Every process of a deployment (webserver, daemon, run workers, Celery workers) must see the
same value: the executor is fixed when the job's module is imported.
"""

import os

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from snapshot_ops.errors import ConfigError

#: The values SNAPSHOT_OPS_EXECUTOR accepts.
EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")
#: The Celery queue steps are sent to when SNAPSHOT_OPS_CELERY_QUEUE is unset (dagster-celery's).
DEFAULT_CELERY_QUEUE = "dagster"


def job_executor(value: str | None = None) -> ExecutorDefinition:
    """The Dagster executor of the cleanup job, named by SNAPSHOT_OPS_EXECUTOR (or `value`).

    - `in_process` (default): every step in the run's own process; a step costs milliseconds.
    - `multiprocess`: each step in its own child process of the run (about a second each).
    - `celery`: each step is a task on a Celery broker, run by `dagster-celery worker start`
      workers. Its broker and result backend come from SNAPSHOT_OPS_CELERY_BROKER and
      SNAPSHOT_OPS_CELERY_BACKEND, read when a run starts (so a password in the URL never shows
      in the run's config); steps go to the queue SNAPSHOT_OPS_CELERY_QUEUE, which the workers
      must listen on (`-q`). Needs the `celery` extra (dagster-celery).
    - `k8s`: each step in its own Kubernetes Job (dagster-k8s's `k8s_job_executor`, configured
      by the run launcher and the run's `execution` config). Needs the `k8s` extra.

    Every executor but `in_process` passes op outputs between processes through the job's IO
    manager, by default pickles under the instance's storage folder ($DAGSTER_HOME/storage).

    Raises ConfigError naming the allowed values for any other value, or naming the extra to
    install when its package is missing.
    """
    name = value if value is not None else os.environ.get("SNAPSHOT_OPS_EXECUTOR", "")
    name = name.strip() or "in_process"
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    if name == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:
            raise _missing_extra(name, "celery", "dagster-celery") from exc
        queue = os.environ.get("SNAPSHOT_OPS_CELERY_QUEUE", "").strip() or DEFAULT_CELERY_QUEUE
        backend = os.environ.get("SNAPSHOT_OPS_CELERY_BACKEND", "").strip()
        return celery_executor.configured(
            {
                "broker": {"env": "SNAPSHOT_OPS_CELERY_BROKER"},
                "backend": {"env": "SNAPSHOT_OPS_CELERY_BACKEND"} if backend else "rpc://",
                "config_source": {"task_default_queue": queue},
            },
            name="celery",
        )
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise _missing_extra(name, "k8s", "dagster-k8s") from exc
        return k8s_job_executor
    raise ConfigError(
        f"SNAPSHOT_OPS_EXECUTOR={name!r} is not one of {', '.join(EXECUTORS)} "
        "(unset means in_process)"
    )


def _missing_extra(name: str, extra: str, package: str) -> ConfigError:
    return ConfigError(
        f"SNAPSHOT_OPS_EXECUTOR={name} needs the {package} package: install snapshot_ops "
        f"with its [{extra}] extra, e.g. pip install -c constraints.txt -e '.[{extra}]'"
    )
