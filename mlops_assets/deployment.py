"""The production executor and the Kubernetes requests of the Spark steps.

Locally the code location keeps Dagster's default executor (multiprocess, or in-process when run
config asks for it). With ``MLOPS_EXECUTOR=k8s`` every step runs in its own Kubernetes Job
(``dagster_k8s.k8s_job_executor``): the image is the code location's own (the user deployment's,
passed on by the run), the environment comes from the ``mlops-assets-env`` Secret by reference,
and a step without its own ``dagster-k8s/config`` op tags gets ``DEFAULT_STEP_RESOURCES``.
Step pods take asset ``op_tags``, never job tags (see DESIGN.md): the GPU steps carry
``mlops_assets.train.k8s.gpu_training_op_tags()``, the Spark step ``spark_step_op_tags()``.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import dagster as dg

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


def executor_for(settings: _HasExecutorSettings) -> dg.ExecutorDefinition | None:
    """The executor the settings ask for; ``None`` keeps Dagster's default (multiprocess)."""
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_executor_config(settings), name="k8s")
    if settings.executor == "in_process":
        return dg.in_process_executor
    return None


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
