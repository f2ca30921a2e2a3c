"""The production executor and the Kubernetes requests of the Spark steps.

Locally the code location runs Dagster's multiprocess executor with its steps forked from a
server that has imported the code location (``preloading_executor``), or in process with
``MLOPS_EXECUTOR=in_process``. With ``MLOPS_EXECUTOR=k8s`` every step runs in its own Kubernetes
Job (``dagster_k8s.k8s_job_executor``): the image is the code location's own (the user deployment's,
passed on by the run), the environment comes from the ``mlops-assets-env`` Secret by reference,
and a step without its own ``dagster-k8s/config`` op tags gets ``DEFAULT_STEP_RESOURCES``.
Step pods take asset ``op_tags``, never job tags (see DESIGN.md): the GPU steps carry
``mlops_assets.train.k8s.gpu_training_op_tags()``, the Spark step ``spark_step_op_tags()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, Protocol

import dagster as dg
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.base import Executor

ExecutorKind = Literal["multiprocess", "in_process", "k8s"]

#: the Secret every step pod reads its MLOPS_* settings and credentials from (envFrom)
ENV_SECRET = "mlops-assets-env"
#: requests of a step that has no dagster-k8s/config op tags (no CPU limit: no throttling)
DEFAULT_STEP_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "500m", "memory": "2Gi"},
    "limits": {"memory": "4Gi"},
}
#: the image's non-root user (deploy/Dockerfile)
RUN_AS_USER = 10001
#: the only writable paths of a pod whose root filesystem is read-only: /tmp (tempfile, Spark's
#: local dir, MLflow downloads) and the home /opt/dagster (~/.cache, ~/.keras, the working
#: directory). deploy/helm/values.yaml gives the code location (and so every run pod) the same
#: two volumes: identical entries merge into one when a run's container context meets the
#: executor's, different ones would name a volume twice and the pod would be refused.
WRITABLE_VOLUMES: list[dict[str, Any]] = [
    {"name": "tmp", "empty_dir": {"size_limit": "8Gi"}},
    {"name": "home", "empty_dir": {"size_limit": "1Gi"}},
]
WRITABLE_MOUNTS: list[dict[str, Any]] = [
    {"name": "tmp", "mount_path": "/tmp"},
    {"name": "home", "mount_path": "/opt/dagster"},
]


class _HasExecutorSettings(Protocol):
    executor: ExecutorKind
    k8s_namespace: str | None
    k8s_image_pull_policy: str
    k8s_env_secrets: list[str]
    k8s_env_config_maps: list[str]
    k8s_service_account: str | None
    k8s_max_concurrent: int | None


def k8s_executor_config(settings: _HasExecutorSettings) -> dict[str, Any]:
    """Config of ``k8s_job_executor`` (its schema: ``DagsterK8sJobConfig.config_type_job()``)."""
    config: dict[str, Any] = {
        "image_pull_policy": settings.k8s_image_pull_policy,
        "env_secrets": list(settings.k8s_env_secrets),
        "env_config_maps": list(settings.k8s_env_config_maps),
        "resources": DEFAULT_STEP_RESOURCES,
        "labels": {"app.kubernetes.io/part-of": "mlops-assets"},
        "security_context": {
            "allow_privilege_escalation": False,
            "read_only_root_filesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumes": [dict(v) for v in WRITABLE_VOLUMES],
        "volume_mounts": [dict(m) for m in WRITABLE_MOUNTS],
        "step_k8s_config": {
            "pod_spec_config": {
                "security_context": {
                    "run_as_non_root": True,
                    "run_as_user": RUN_AS_USER,
                    "run_as_group": RUN_AS_USER,
                    "fs_group": RUN_AS_USER,
                }
            },
            # finished step Jobs (and their pods) go after a day
            "job_spec_config": {"ttl_seconds_after_finished": 86400},
        },
    }
    if settings.k8s_namespace:
        config["job_namespace"] = settings.k8s_namespace
    if settings.k8s_service_account:
        config["service_account_name"] = settings.k8s_service_account
    if settings.k8s_max_concurrent:
        config["max_concurrent"] = settings.k8s_max_concurrent
    return config


#: what the multiprocess executor's fork server imports once per run, before it forks a process
#: per step: the code location (Dagster and the project's modules) and the data libraries every
#: data step reads and writes with (about 1.5 s together here). Only imports: the fork server
#: starts no thread pool, opens no file or connection; the training steps' libraries (MLflow,
#: Optuna, XGBoost, TensorFlow) load in the steps that use them.
FORKSERVER_PRELOAD: tuple[str, ...] = (
    "dagster._core.executor.multiprocess",
    "mlops_assets.definitions",
    # the instance's storage (a step opens the instance first; `import dagster` leaves them out)
    "dagster._core.storage.base_storage",
    "dagster._core.storage.sqlite_storage",
    "dagster_postgres",
    "upath",
    "numpy",
    "pyarrow",
    "pandas",
    "polars",
    "deltalake",
    "duckdb",
    "pandera.polars",
)


def multiprocess_config(config: dict[str, Any]) -> dict[str, Any]:
    """The default executor's config (``{"multiprocess": {...}}`` or ``{"in_process": {...}}``,
    as the run config or launchpad gives it) with the multiprocess start method defaulting to a
    fork server that has imported ``FORKSERVER_PRELOAD``. Dagster's own default, ``spawn``,
    starts each step in a new interpreter that imports Dagster and the code location again
    (1.5-4 s a step, more than a small day's whole work); forked from the server, a step starts
    with them imported. A ``start_method`` the run sets is kept."""
    if "multiprocess" not in config:
        return config
    multiprocess = dict(config["multiprocess"] or {})
    multiprocess.setdefault(
        "start_method", {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}
    )
    return {**config, "multiprocess": multiprocess}


class _ForkServerPerRun(Executor):
    """The multiprocess executor of one run whose fork server ends with the run. Python keeps one
    fork server per process: left running, it would fork the next run's steps in a process
    that calls ``execute_job`` more than once (a notebook, a test) with the environment and the
    code it had when the first run started it. A run worker (the CLI, ``dagster dev``'s runs,
    a run pod) runs one run and exits anyway."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    @property
    def retries(self) -> RetryMode:
        return self._executor.retries

    @property
    def step_dependency_config(self) -> Any:
        return self._executor.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        try:
            yield from self._executor.execute(plan_context, execution_plan)
        finally:
            stop_fork_server()


def stop_fork_server() -> None:
    """Stop this process's fork server, if one runs (the next forkserver process starts a new
    one, with the environment and code of that moment)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)  # CPython's (used by its own tests); absent: nothing
    if server is not None and stop is not None and server._forkserver_pid is not None:
        stop()


def _create_preloading_executor(init_context: dg.InitExecutorContext) -> Executor:
    default = dg.multi_or_in_process_executor
    config = multiprocess_config(dict(init_context.executor_config))
    assert default.executor_creation_fn is not None
    executor = default.executor_creation_fn(init_context._replace(executor_config=config))
    return _ForkServerPerRun(executor) if "multiprocess" in config else executor


def preloading_executor() -> dg.ExecutorDefinition:
    """Dagster's default executor (multiprocess, or in process from run config) under its own
    name and config schema, with ``multiprocess_config``'s default start method and a fork
    server per run (``_ForkServerPerRun``)."""
    default = dg.multi_or_in_process_executor
    return dg.ExecutorDefinition(
        name=default.name,
        config_schema=default.config_schema.as_field(),
        requirements=default.get_requirements,
        executor_creation_fn=_create_preloading_executor,
        description=default.description,
    )


def executor_for(settings: _HasExecutorSettings) -> dg.ExecutorDefinition:
    """The executor the settings ask for (multiprocess: ``preloading_executor``)."""
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_executor_config(settings), name="k8s")
    if settings.executor == "in_process":
        return dg.in_process_executor
    return preloading_executor()


def spark_step_op_tags(cpu: str = "4", memory: str = "16Gi") -> dict[str, Any]:
    """``dagster-k8s/config`` op tags of a Spark step: the step pod is the Spark driver (and with
    ``local[*]`` the executors too), so it requests the CPUs and memory Spark will use. The
    memory limit leaves room above ``spark.driver.memory`` for the JVM's off-heap and Python."""
    return {
        "dagster-k8s/config": {
            "container_config": {
                "resources": {
                    "requests": {"cpu": cpu, "memory": memory},
                    "limits": {"memory": memory},
                }
            },
        }
    }


#: the op tags the ``transaction_features`` asset should carry
SPARK_STEP_OP_TAGS = spark_step_op_tags()
