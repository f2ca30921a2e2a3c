"""The deployment: the Dockerfile, the Kubernetes Job manifests dagster-k8s builds for the step
pods, the MLflow manifests, the Helm values and the Compose stack.

No Docker engine, cluster or chart is needed: the step Jobs are built by dagster-k8s's own code
(the executor's container context, the op tags, ``construct_dagster_k8s_job``) and every
Kubernetes object is validated against the Kubernetes OpenAPI schema shipped by
kubernetes-validate (strict: unknown fields fail).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.plan.handle import ResolvedFromDynamicStepHandle, UnresolvedStepHandle
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.executor.init import InitExecutorContext
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    USER_DEFINED_K8S_CONFIG_KEY,
    construct_dagster_k8s_job,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)

from mlops_assets.deployment import (
    DEFAULT_STEP_RESOURCES,
    ENV_SECRET,
    SPARK_STEP_OP_TAGS,
    executor_for,
    k8s_executor_config,
)
from mlops_assets.environment import spark_config
from mlops_assets.resources.spark_jars import delta_jars, s3a_jars
from mlops_assets.resources.spark_s3 import CREDENTIALS_PROVIDER
from mlops_assets.settings import Settings
from mlops_assets.train.k8s import (
    GPU_NODE_SELECTOR,
    GPU_RESOURCE,
    GPU_TOLERATION,
    gpu_training_op_tags,
)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33"  # a current Kubernetes; kubernetes-validate 1.37 ships schemas up to 1.37
IMAGE = "registry.example.com/mlops-assets:0123abc"
GPU_KINDS = {"tensorflow", "keras", "xgboost"}


# ---------------------------------------------------------------- Kubernetes schema validation


def _validate_k8s(manifest: dict[str, Any]) -> None:
    assert kubernetes_validate.utils.latest_version() >= K8S_VERSION
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_schema_validation_catches_mistakes() -> None:
    """The validator is strict: a misspelled field and a wrong type fail."""
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    _validate_k8s({**config_map, "data": {"a": "1"}})
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_k8s({**config_map, "dta": {"a": "1"}})
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_k8s({**config_map, "data": {"a": 1}})


# ---------------------------------------------------------------- the executor and step Jobs


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from mlops_assets.definitions import defs

    return defs


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kubeconfig for a cluster that is never contacted (objects are only built)."""
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def executor_settings() -> Settings:
    return Settings(executor="k8s", k8s_namespace="mlops")


@pytest.fixture(scope="module")
def step_handler(executor_settings: Settings, kubeconfig: str):
    """The real K8sStepHandler that ``executor_for(settings)`` creates (no cluster contacted)."""
    executor_def = executor_for(executor_settings)
    assert executor_def is not None and executor_def.name == "k8s"
    resolved = executor_def.config_schema.resolve_config({})
    assert resolved.success, resolved.errors
    config = {**resolved.value["config"], "load_incluster_config": False}
    config["kubeconfig_file"] = kubeconfig

    @dg.op
    def noop() -> None: ...

    @dg.job
    def one_step() -> None:
        noop()

    with dg.DagsterInstance.ephemeral() as instance:
        executor = executor_def.executor_creation_fn(
            InitExecutorContext(
                job=InMemoryJob(one_step),
                executor_def=executor_def,
                executor_config=config,
                instance=instance,
            )
        )
    return executor._step_handler


@pytest.fixture(scope="module")
def run_launcher(kubeconfig: str) -> K8sRunLauncher:
    """The run launcher as the Helm chart configures it (instance ConfigMap, Postgres secret)."""
    return K8sRunLauncher(
        service_account_name="dagster",
        instance_config_map="dagster-instance",
        dagster_home="/opt/dagster/dagster_home",
        postgres_password_secret="dagster-postgresql-secret",
        load_incluster_config=False,
        kubeconfig_file=kubeconfig,
        job_namespace="mlops",
    )


def _step_job(step_handler, run_launcher, step_key: str, op_tags: dict[str, Any]) -> dict:
    """The Job manifest K8sStepHandler.launch_step would create for a step with these op tags
    (same merge order: executor context, then the step's ``dagster-k8s/config`` tags)."""
    tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in op_tags.items()}
    context = step_handler._executor_container_context.merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags))
    )
    job_config = context.get_k8s_job_config(None, run_launcher).with_image(IMAGE)
    run_id = "2f1c8f5e-4c1e-4d55-9d39-1b8c1a0e7f21"
    job_name = f"dagster-step-{get_k8s_job_name(run_id, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=job_name,
        pod_name=job_name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "training_job", "dagster/op": step_key, "dagster/run-id": run_id},
        env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": step_key}],
    )
    assert context.namespace == "mlops"
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def _container(manifest: dict) -> dict:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


def _is_gpu_step(spec: dg.AssetSpec) -> bool:
    name = spec.key.to_user_string()
    return bool(GPU_KINDS & set(spec.kinds)) or name.endswith(("_tuning", "_candidate"))


def test_executor_for_the_settings() -> None:
    multiprocess = executor_for(Settings(executor="multiprocess"))
    assert multiprocess.name == dg.multi_or_in_process_executor.name  # Dagster's, preloading
    assert executor_for(Settings(executor="in_process")) is dg.in_process_executor
    k8s = executor_for(Settings(executor="k8s"))
    assert k8s is not None and k8s.name == "k8s"


def test_executor_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_EXECUTOR", "k8s")
    monkeypatch.setenv("MLOPS_K8S_NAMESPACE", "fraud")
    monkeypatch.setenv("MLOPS_K8S_ENV_SECRETS", '["mlops-assets-env", "aws"]')
    config = k8s_executor_config(Settings())
    assert config["job_namespace"] == "fraud"
    assert config["env_secrets"] == ["mlops-assets-env", "aws"]
    monkeypatch.setenv("MLOPS_EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match="executor"):
        Settings()


def test_gpu_training_step_job(defs: dg.Definitions, step_handler, run_launcher) -> None:
    """The xgboost_candidate step pod: one GPU, GPU nodes only, image and env by reference."""
    op_tags = defs.resolve_assets_def("xgboost_candidate").op.tags
    manifest = _step_job(step_handler, run_launcher, "xgboost_candidate", op_tags)
    _validate_k8s(manifest)

    pod = manifest["spec"]["template"]["spec"]
    container = _container(manifest)
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    assert container["resources"]["requests"][GPU_RESOURCE] == "1"
    assert pod["nodeSelector"] == GPU_NODE_SELECTOR
    assert GPU_TOLERATION in pod["tolerations"]
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert {"secretRef": {"name": ENV_SECRET}} in container["envFrom"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_HOME"]["value"] == "/opt/dagster/dagster_home"
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "dagster-postgresql-secret"
    )
    assert container["args"] == ["dagster", "api", "execute_step"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 86400


def test_spark_step_job(defs: dg.Definitions, step_handler, run_launcher) -> None:
    """The transaction_features step pod requests what Spark uses (its op tags, or the constant
    until the asset carries them)."""
    op_tags = defs.resolve_assets_def("transaction_features").op.tags
    if USER_DEFINED_K8S_CONFIG_KEY in op_tags:
        assert (
            json.loads(op_tags[USER_DEFINED_K8S_CONFIG_KEY])
            == (SPARK_STEP_OP_TAGS[USER_DEFINED_K8S_CONFIG_KEY])
        )
    manifest = _step_job(step_handler, run_launcher, "transaction_features", SPARK_STEP_OP_TAGS)
    _validate_k8s(manifest)
    resources = _container(manifest)["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert resources["limits"] == {"memory": "16Gi"}
    assert GPU_RESOURCE not in resources["limits"]
    assert "nodeSelector" not in manifest["spec"]["template"]["spec"]


def test_plain_step_gets_the_default_resources(step_handler, run_launcher) -> None:
    manifest = _step_job(step_handler, run_launcher, "raw_transactions", {})
    _validate_k8s(manifest)
    assert _container(manifest)["resources"] == DEFAULT_STEP_RESOURCES
    assert {"secretRef": {"name": ENV_SECRET}} in _container(manifest)["envFrom"]


#: fan-out of the graph-backed assets' step specs (e.g. ``workers`` of a tuning asset)
FAN_OUT = 3


def _asset_steps(defs: dg.Definitions, key: dg.AssetKey) -> list[Any]:
    """The execution-plan steps of one asset, as the executor launches them: a graph-backed
    asset's dynamic fan-out resolved to ``FAN_OUT`` steps (``...trials[worker_0]``...)."""
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={key})
    plan = create_execution_plan(job)
    fan_out = [f"worker_{i}" for i in range(FAN_OUT)]
    mappings = {
        step.key: {output.name: fan_out for output in step.step_outputs if output.is_dynamic}
        for step in plan.step_dict.values()
        if any(output.is_dynamic for output in step.step_outputs)
    }
    if mappings:
        plan = create_execution_plan(
            job, known_state=KnownExecutionState(dynamic_mappings=mappings)
        )
    return [s for s in plan.step_dict.values() if not isinstance(s.handle, UnresolvedStepHandle)]


def _training_steps(defs: dg.Definitions, key: dg.AssetKey) -> list[Any]:
    """The steps of a GPU asset that train: its one step or, in a graph-backed asset, the
    fanned-out worker steps (each tuning worker trains); every step when there is no fan-out."""
    steps = _asset_steps(defs, key)
    fanned = [s for s in steps if isinstance(s.handle, ResolvedFromDynamicStepHandle)]
    return fanned or steps


def _requests_gpu(manifest: dict) -> bool:
    pod = manifest["spec"]["template"]["spec"]
    limits = _container(manifest)["resources"].get("limits", {})
    return (
        limits.get(GPU_RESOURCE) == "1"
        and pod.get("nodeSelector") == GPU_NODE_SELECTOR
        and GPU_TOLERATION in pod.get("tolerations", [])
    )


def _gpu_steps_without_gpu(defs: dg.Definitions, step_handler, run_launcher) -> list[str]:
    """Step keys of GPU assets' training steps whose pod would not get a GPU node."""
    missing = []
    for spec in defs.resolve_all_asset_specs():
        if not _is_gpu_step(spec):
            continue
        for step in _training_steps(defs, spec.key):
            manifest = _step_job(step_handler, run_launcher, step.key, dict(step.tags))
            if not _requests_gpu(manifest):
                missing.append(step.key)
    return missing


def test_every_gpu_step_requests_a_gpu(defs: dg.Definitions, step_handler, run_launcher) -> None:
    """Any TensorFlow / XGBoost asset, or any *_tuning / *_candidate asset, must ask for a GPU on
    a GPU node; otherwise it would train on the CPU of whatever node it lands on. A tuning
    asset's worker steps train (each its share of trials): each asks; its planning and
    best-trial steps do not train and take no GPU node."""
    gpu_steps = {s.key.to_user_string() for s in defs.resolve_all_asset_specs() if _is_gpu_step(s)}
    assert gpu_steps >= {"xgboost_tuning", "mlp_tuning", "xgboost_candidate", "mlp_candidate"}
    missing = _gpu_steps_without_gpu(defs, step_handler, run_launcher)
    assert not missing, f"GPU steps without the GPU request, node selector or toleration: {missing}"
    for family in ("xgboost", "mlp"):
        key = dg.AssetKey(f"{family}_tuning")
        workers = {s.key for s in _training_steps(defs, key)}
        assert workers == {f"{family}_tuning.{family}_trials[worker_{i}]" for i in range(FAN_OUT)}
        light = {s.key: s for s in _asset_steps(defs, key) if s.key not in workers}
        assert set(light) == {f"{family}_tuning.{family}_study", f"{family}_tuning.{family}_best"}
        for step in light.values():
            manifest = _step_job(step_handler, run_launcher, step.key, dict(step.tags))
            _validate_k8s(manifest)
            assert _container(manifest)["resources"] == DEFAULT_STEP_RESOURCES, step.key


def test_the_gpu_rule_flags_a_step_without_gpu_tags(step_handler, run_launcher) -> None:
    @dg.asset(kinds={"xgboost"})
    def untagged_model() -> None: ...

    @dg.asset
    def lightgbm_candidate() -> None: ...

    @dg.asset(kinds={"tensorflow"}, op_tags={"dagster-k8s/config": {"container_config": {}}})
    def cpu_only_net() -> None: ...

    @dg.asset
    def report() -> None: ...

    @dg.op(out=dg.DynamicOut())
    def plan():
        yield from (dg.DynamicOutput(i, mapping_key=f"worker_{i}") for i in range(2))

    @dg.op(tags=gpu_training_op_tags())
    def tagged_trials(work) -> int:
        return work

    @dg.op
    def untagged_trials(work) -> int:
        return work

    @dg.op
    def pick(reports: list) -> int:
        return max(reports)

    @dg.graph_asset
    def catboost_tuning():  # the fan-out workers lack the GPU tags
        return pick(plan().map(untagged_trials).collect())

    @dg.graph_asset(kinds={"xgboost"})
    def fanned_out_model():  # the workers have them (the light steps need none)
        return pick(plan().map(tagged_trials).collect())

    defs = dg.Definitions(
        assets=[
            untagged_model,
            lightgbm_candidate,
            cpu_only_net,
            report,
            catboost_tuning,
            fanned_out_model,
        ]
    )
    assert sorted(_gpu_steps_without_gpu(defs, step_handler, run_launcher)) == [
        "catboost_tuning.untagged_trials[worker_0]",
        "catboost_tuning.untagged_trials[worker_1]",
        "catboost_tuning.untagged_trials[worker_2]",
        "cpu_only_net",
        "lightgbm_candidate",
        "untagged_model",
    ]


# ---------------------------------------------------------------- MLflow manifests


def test_mlflow_manifests_are_valid_kubernetes() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "mlflow.yaml").read_text()) if d]
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Service"]
    for doc in docs:
        _validate_k8s(doc)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = " ".join(container["args"])
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
    assert "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in args
    env = {e["name"]: e for e in container["env"]}
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-server"
        assert "value" not in env[name]
    text = (DEPLOY / "k8s" / "mlflow.yaml").read_text()
    assert "postgresql+psycopg2://mlflow:" not in text.split("apiVersion", 1)[1]


# ---------------------------------------------------------------- Spark Connect manifests


def _spark_defaults(text: str) -> dict[str, str]:
    pairs = (line.split(None, 1) for line in text.splitlines() if line.strip())
    return {key: value.strip() for key, value in pairs if not key.startswith("#")}


def test_spark_connect_manifests_are_valid_kubernetes() -> None:
    """The Connect server: valid objects, the same Delta configuration as the code location's
    own sessions, S3A credentials from the environment, the jars of the image's cache, sized
    resources; the client address in the header is one the settings accept."""
    text = (DEPLOY / "k8s" / "spark-connect.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Service"]
    for doc in docs:
        _validate_k8s(doc)
    by_kind = {d["kind"]: d for d in docs}
    deployment, service = by_kind["Deployment"], by_kind["Service"]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["targetPort"] == "grpc" and grpc["port"] == ports["grpc"] == 15002

    conf = _spark_defaults(by_kind["ConfigMap"]["data"]["spark-defaults.conf"])
    assert conf["spark.connect.grpc.binding.port"] == "15002"
    local = spark_config(Settings(spark_master="local[2]"))
    for key in ("spark.sql.extensions", "spark.sql.catalog.spark_catalog"):
        assert conf[key] == local[key]
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"] == CREDENTIALS_PROVIDER
    assert not [k for k in conf if "access.key" in k or "secret" in k]  # never in the file

    command = container["args"][2]
    assert "org.apache.spark.sql.connect.service.SparkConnectServer" in command
    assert f"/opt/spark-jars/{delta_jars().name}-*/*.jar" in command
    assert f"/opt/spark-jars/{s3a_jars().name}-*/*.jar" in command
    assert {"secretRef": {"name": ENV_SECRET}} in container["envFrom"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert f"--properties-file {mounts['conf']}/spark-defaults.conf" in command

    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    heap_gi = int(conf["spark.driver.memory"].removesuffix("g"))
    assert heap_gi < int(resources["limits"]["memory"].removesuffix("Gi"))
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    address = re.search(r"MLOPS_SPARK_MASTER=(sc://\S+)", text)
    assert address and address.group(1).endswith(f":{grpc['port']}")
    assert f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc" in (
        address.group(1)
    )
    client = spark_config(Settings(spark_master=address.group(1)))
    assert client["spark.remote"] == address.group(1)


# ---------------------------------------------------------------- the deployment guide

#: variables read outside ``Settings`` (by the module named)
_NON_SETTINGS = {"MLOPS_TRAINING_DEVICE"}  # mlops_assets/train/device.py
#: deployment files of components that read no MLOPS_* setting
_NO_SETTINGS_FILES = {"dagster-ui-proxy.yaml"}


def test_every_mlops_variable_in_the_deployment_files_is_a_setting() -> None:
    known = {f"MLOPS_{name.upper()}" for name in Settings.model_fields} | _NON_SETTINGS
    for path in [DEPLOY / "README.md", DEPLOY / "helm" / "values.yaml", *DEPLOY.glob("k8s/*")]:
        named = set(re.findall(r"\bMLOPS_[A-Z0-9_]*[A-Z0-9]\b(?!_\*)", path.read_text()))
        assert named or path.name in _NO_SETTINGS_FILES, path
        assert named <= known, f"{path.name}: {sorted(named - known)}"


# ---------------------------------------------------------------- Helm values


def test_helm_values() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    user = values["dagster-user-deployments"]
    assert user["enabled"] is True
    (deployment,) = user["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "mlops_assets.definitions"]
    assert deployment["port"] == 3030
    assert deployment["image"]["repository"].endswith("/mlops-assets")
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert {"name": ENV_SECRET} in deployment["envSecrets"]
    assert {"name": "MLOPS_EXECUTOR", "value": "k8s"} in deployment["env"]
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    assert deployment["resources"]["requests"]

    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert {"name": ENV_SECRET} in launcher["config"]["k8sRunLauncher"]["envSecrets"]
    assert launcher["config"]["k8sRunLauncher"]["resources"]["requests"]

    # external Postgres; the password only by reference
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlHost"]
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"

    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert daemon["sensors"]["useThreads"] is True
    assert daemon["backfills"]["useThreads"] is True
    assert daemon["schedules"]["useThreads"] is True
    assert daemon["resources"]["requests"]

    # resources wherever the chart runs a container of ours
    assert values["dagsterWebserver"]["resources"]["requests"]

    # secrets by reference only: no literal credential anywhere
    flat = json.dumps(values).lower()
    for leak in ("aws_secret_access_key", 'password": "m', "token"):
        assert leak not in flat


def test_helm_user_deployment_pod_fields_are_valid_kubernetes() -> None:
    """The Kubernetes objects the values embed (security contexts, resources) pass the schema
    inside a Pod, as the chart renders them."""
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mlops-assets"},
        "spec": {
            "securityContext": deployment["podSecurityContext"],
            "containers": [
                {
                    "name": "mlops-assets",
                    "image": "registry.example.com/mlops-assets:latest",
                    "env": deployment["env"],
                    "envFrom": [{"secretRef": s} for s in deployment["envSecrets"]],
                    "securityContext": deployment["securityContext"],
                    "resources": deployment["resources"],
                }
            ],
        },
    }
    _validate_k8s(pod)


# ---------------------------------------------------------------- Dockerfile


def _dockerfile_stages() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(name, base, [(instruction, arguments)]) per stage, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    stages: list[tuple[str, str, list[tuple[str, str]]]] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arguments.strip(), re.IGNORECASE)
            assert match, line
            stages.append((match.group(2) or "", match.group(1), []))
        elif stages:
            stages[-1][2].append((instruction, arguments.strip()))
    return stages


def _inherited(stages, name: str, instruction: str) -> list[str]:
    """Arguments of an instruction in a stage and the stages it is built FROM."""
    by_name = {stage[0]: stage for stage in stages}
    found: list[str] = []
    while name in by_name:
        _, base, instructions = by_name[name]
        found = [args for ins, args in instructions if ins == instruction] + found
        name = base
    return found


def test_dockerfile() -> None:
    stages = _dockerfile_stages()
    names = [name for name, _, _ in stages]
    assert {"builder", "spark-jars", "runtime", "gpu"} <= set(names)
    assert names[-1] == "runtime", "the default build target is the CPU runtime"
    by_name = {name: (base, instructions) for name, base, instructions in stages}

    builder = " ".join(args for _, args in by_name["builder"][1])
    assert "uv sync --frozen --no-dev" in builder and "uv.lock" in builder
    spark_jars_stage = " ".join(a for _, a in by_name["spark-jars"][1])
    assert "mlops-assets fetch-spark-jars" in spark_jars_stage
    assert "fetch_spark_jars(" in spark_jars_stage  # Delta and the S3A jars

    runtime_runs = " ".join(_inherited(stages, "runtime", "RUN"))
    assert "openjdk-17-jre-headless" in runtime_runs
    assert "COPY --from=builder /opt/venv /opt/venv" in [
        f"COPY {a}" for a in _inherited(stages, "runtime", "COPY")
    ]
    assert any(
        a.startswith("--from=spark-jars /opt/spark-jars")
        for a in _inherited(stages, "runtime", "COPY")
    )
    env = " ".join(_inherited(stages, "runtime", "ENV"))
    assert "MLOPS_SPARK_JARS_DIR=/opt/spark-jars" in env

    for target in ("runtime", "gpu"):
        users = _inherited(stages, target, "USER")
        assert users and users[-1].split(":")[0] not in {"root", "0"}, target
        assert "useradd" in " ".join(_inherited(stages, target, "RUN"))
        cmd = json.loads(_inherited(stages, target, "CMD")[-1])
        assert cmd[:3] == ["dagster", "api", "grpc"]
        assert cmd[cmd.index("-m") + 1] == "mlops_assets.definitions"
        assert cmd[cmd.index("-p") + 1] == "3030"
        # run and step pods pass `dagster api execute_*` as args: the entrypoint must not
        # prepend a command of its own
        entrypoint = json.loads(_inherited(stages, target, "ENTRYPOINT")[-1])
        assert "dagster" not in entrypoint
    assert "tensorflow[and-cuda]" in " ".join(
        _inherited(stages, "gpu", "RUN") + [a for _, a in by_name["builder-gpu"][1]]
    )
    assert "--from=builder-gpu /opt/venv /opt/venv" in _inherited(stages, "gpu", "COPY")


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".git", ".mlops", ".tools", "mlops_assets_tests"):
        assert path in ignored
    for needed in ("mlops_assets", "pyproject.toml", "uv.lock", "README.md"):
        assert needed not in ignored


# ---------------------------------------------------------------- Compose


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    return None


def test_compose_structure() -> None:
    """Structural check (always runs; `docker compose config` below when the plugin exists)."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "postgres",
        "minio",
        "mlflow",
        "mlops-assets",
        "dagster-webserver",
        "dagster-daemon",
    } <= set(services)
    code = services["mlops-assets"]
    assert code["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / code["build"]["context"] / code["build"]["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile"
    )
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for config in service.get("configs", []):
            assert config["source"] in compose["configs"], (name, config)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):  # a bind mount of the repository's monitoring files
                assert (DEPLOY / source).exists(), (name, volume)
            else:
                assert source in compose["volumes"], (name, volume)
    assert "grpc_server" in compose["configs"]["workspace"]["content"]
    assert "port: 3030" in compose["configs"]["workspace"]["content"]
    instance = yaml.safe_load(compose["configs"]["dagster-instance"]["content"])
    assert "postgres" in instance["storage"]
    assert services["mlops-assets"]["environment"]["MLOPS_MLFLOW_TRACKING_URI"] == (
        "http://mlflow:5000"
    )
    mlflow_args = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql" in mlflow_args
    assert "--artifacts-destination=s3://" in mlflow_args


#: published ports that may listen beyond this machine's loopback: services with a login
COMPOSE_PUBLIC_SERVICES = {"model-service", "grafana"}


def test_compose_keeps_the_dagster_webserver_behind_the_proxy() -> None:
    """The webserver publishes nothing; the UI is oauth2-proxy with the deployment's config file
    and secrets as files, in front of the webserver's compose address; what has no login of its
    own is published on loopback only."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    webserver, proxy = services["dagster-webserver"], services["dagster-ui-proxy"]
    assert "ports" not in webserver
    port = webserver["command"][webserver["command"].index("-p") + 1]
    args = proxy["command"]
    assert "--config=/etc/oauth2-proxy/oauth2-proxy.cfg" in args
    assert f"--upstream=http://dagster-webserver:{port}/" in args
    assert any(a.startswith("--oidc-issuer-url=${DAGSTER_UI_OIDC_ISSUER_URL:?") for a in args)
    assert any(a.startswith("--email-domain=${DAGSTER_UI_EMAIL_DOMAIN:?") for a in args)
    assert not any("secret" in a and "=" in a and "file" not in a for a in args), args
    (config,) = proxy["configs"]
    assert compose["configs"][config["source"]]["file"] == "./oauth2-proxy/oauth2-proxy.cfg"
    assert (DEPLOY / "oauth2-proxy" / "oauth2-proxy.cfg").exists()
    mounted = {s["target"]: compose["secrets"][s["source"]]["file"] for s in proxy["secrets"]}
    assert set(mounted) == {
        "/etc/oauth2-proxy/secrets/client-secret",
        "/etc/oauth2-proxy/secrets/cookie-secret",
    }
    assert all(f.startswith("${MLOPS_SECRETS_DIR:-./secrets}/") for f in mounted.values())
    assert proxy["ports"] == ["127.0.0.1:3000:4180"]
    tag = proxy["image"].rsplit(":", 1)[1]
    ensure = (DEPLOY.parent / "scripts" / "ensure_oauth2_proxy.sh").read_text()
    assert f"VERSION={tag} " in ensure  # the tested binary is the deployed release
    for name, service in services.items():
        for published in service.get("ports", []):
            if name not in COMPOSE_PUBLIC_SERVICES:
                assert str(published).startswith("127.0.0.1:"), (name, published)


@pytest.mark.skipif(_compose_cli() is None, reason="the docker compose plugin is not installed")
def test_compose_config() -> None:
    result = subprocess.run(
        [*_compose_cli(), "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        env={
            **os.environ,
            "DAGSTER_UI_OIDC_ISSUER_URL": "https://login.bank.example",
            "DAGSTER_UI_EMAIL_DOMAIN": "bank.example",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- the online model service


def test_model_service_manifests_are_valid_kubernetes() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "model-service.yaml").read_text()) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    for doc in docs:
        _validate_k8s(doc)
    by_kind = {d["kind"]: d for d in docs}
    deployment = by_kind["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert by_kind["Service"]["spec"]["selector"].items() <= labels.items()
    assert by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )
    target = by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])

    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"] + container["args"]
    assert command[command.index("mlops-assets") :][:2] == ["mlops-assets", "serve"]
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"
    (declared,) = container["ports"]
    assert declared["containerPort"] == port
    # the probes are the service's own endpoints: ready = a model is loaded, alive = /health
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"]["cpu"]  # the HPA scales on CPU utilisation
    assert container["envFrom"] == [{"secretRef": {"name": "mlops-assets-env"}}]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    settings_fields = {f"MLOPS_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= settings_fields
    Settings.model_validate({k.removeprefix("MLOPS_").lower(): v for k, v in env.items()})


def test_model_service_routes_match_the_app() -> None:
    """The paths the manifests probe and the README documents exist on the app."""
    from mlops_assets.serve.app import create_app
    from mlops_assets.serve.model_holder import ModelHolder
    from mlops_assets.serve.online_features import HistorySnapshot

    app = create_app(ModelHolder(lambda: None, "m", "champion"), HistorySnapshot.empty)
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/predict", "/predict/batch", "/health", "/ready", "/model-info", "/reload"} <= paths
    assert {"/metrics", "/docs", "/openapi.json"} <= paths


def test_compose_runs_the_model_service() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    service = services["model-service"]
    assert service["command"][:2] == ["mlops-assets", "serve"]
    assert "mlops-data:/opt/dagster/app" in service["volumes"]  # the code location's lake
    assert service["environment"]["MLOPS_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


# ---------------------------------------------------------------- hardening of every workload

_WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}


def _pod_spec(doc: dict) -> dict:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _helm_user_deployment_pod() -> dict:
    """The code-location pod as the chart renders it from the values (the only container the
    values define; the webserver and daemon are the chart's own images)."""
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": deployment["name"]},
        "spec": {
            "securityContext": deployment["podSecurityContext"],
            "volumes": deployment.get("volumes", []),
            "containers": [
                {
                    "name": deployment["name"],
                    "image": f"{deployment['image']['repository']}:{deployment['image']['tag']}",
                    "securityContext": deployment["securityContext"],
                    "volumeMounts": deployment.get("volumeMounts", []),
                    "resources": deployment["resources"],
                }
            ],
        },
    }


def _helm_component_pod(component: str) -> dict:
    """The webserver's or daemon's pod as the chart renders the values' fields (its image and
    command are the chart's own)."""
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())[component]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": component},
        "spec": {
            "securityContext": values["podSecurityContext"],
            "volumes": values.get("volumes", []),
            "containers": [
                {
                    "name": component,
                    "image": "docker.io/dagster/dagster-celery-k8s:1.13.0",
                    "securityContext": values["securityContext"],
                    "volumeMounts": values.get("volumeMounts", []),
                    "resources": values.get("resources", {}),
                }
            ],
        },
    }


def _workloads() -> list[tuple[str, dict]]:
    found = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in _WORKLOAD_KINDS:
                found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    found.append(("helm/values.yaml:dagster-user-deployments", _helm_user_deployment_pod()))
    for component in ("dagsterWebserver", "dagsterDaemon"):
        found.append((f"helm/values.yaml:{component}", _helm_component_pod(component)))
    return found


def _hardening_problems(doc: dict) -> list[str]:
    """What a workload lacks: non-root (pod or container level, a non-zero uid), no privilege
    escalation, all capabilities dropped, a read-only root filesystem; mounts of real volumes."""
    pod = _pod_spec(doc)
    pod_context = pod.get("securityContext") or {}
    volumes = {v["name"] for v in pod.get("volumes", [])}
    problems = []
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = {**pod_context, **(container.get("securityContext") or {})}
        name = container["name"]
        if context.get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if not isinstance(context.get("runAsUser"), int) or context["runAsUser"] == 0:
            problems.append(f"{name}: no non-zero runAsUser")
        if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in container.get("securityContext", {}).get("capabilities", {}).get(
            "drop", []
        ):
            problems.append(f"{name}: capabilities do not drop ALL")
        if container.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{name}: mounts undeclared volume {mount['name']}")
    return problems


def test_every_workload_is_hardened() -> None:
    """Every container of every workload in deploy/k8s and the Helm values runs as a non-root
    uid, cannot escalate, has no capabilities and a read-only root filesystem (what it writes
    goes to emptyDirs: /tmp and the home); each object is valid Kubernetes."""
    workloads = _workloads()
    names = {name.split(":")[1] for name, _ in workloads}
    assert {
        "Deployment/model-service",
        "Deployment/mlflow",
        "Deployment/spark-connect",
        "Deployment/dagster-ui-proxy",
        "dagsterWebserver",
        "dagsterDaemon",
    } <= names
    problems = {}
    for name, doc in workloads:
        _validate_k8s(doc)
        if found := _hardening_problems(doc):
            problems[name] = found
    assert not problems, problems
    # the writable paths of the processes: /tmp and the home, never the image's directories
    for name, doc in workloads:
        for container in _pod_spec(doc)["containers"]:
            paths = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in paths, name
            assert not paths & {"/", "/opt", "/opt/venv", "/opt/spark-jars", "/usr"}, name


def test_step_and_run_pods_are_hardened(defs: dg.Definitions, step_handler, run_launcher) -> None:
    """The step Jobs the k8s executor creates (a plain, a Spark and a GPU step) are hardened as
    the deployments are, also once the run's container context from the Helm code location
    (includeConfigInLaunchedRuns: its security context and the same writable volumes) is merged
    in: each volume and mount path appears once, so Kubernetes accepts the pod."""
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    from_code_location = K8sContainerContext(
        volumes=deployment["volumes"],
        volume_mounts=deployment["volumeMounts"],
        security_context=deployment["securityContext"],
        env_secrets=[s["name"] for s in deployment["envSecrets"]],
    )
    gpu_tags = defs.resolve_assets_def("xgboost_candidate").op.tags
    steps = {
        "raw_transactions": {},
        "transaction_features": SPARK_STEP_OP_TAGS,
        "xgboost_candidate": gpu_tags,
    }
    for step_key, op_tags in steps.items():
        for merged in (False, True):
            handler = step_handler
            if merged:
                handler = _WithContext(
                    step_handler._executor_container_context.merge(from_code_location)
                )
            manifest = _step_job(handler, run_launcher, step_key, op_tags)
            _validate_k8s(manifest)
            assert _hardening_problems(manifest) == [], (step_key, merged)
            pod = manifest["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            names = [v["name"] for v in pod["volumes"]]
            paths = [m["mountPath"] for m in container["volumeMounts"]]
            assert sorted(names) == ["home", "tmp"], (step_key, merged, names)
            assert sorted(paths) == ["/opt/dagster", "/tmp"], (step_key, merged, paths)


class _WithContext:
    """A step handler stand-in carrying another executor container context (what the step
    handler of a run launched from the Helm code location holds)."""

    def __init__(self, context: K8sContainerContext) -> None:
        self._executor_container_context = context


def test_the_ui_proxy_manifests() -> None:
    """Ingress -> oauth2-proxy -> the chart's webserver Service, and nothing else reaches the
    webserver: the manifests are valid Kubernetes, the proxy runs the tested config file and
    release, its secrets come from a Secret as files, and the chart exposes no Ingress of its
    own."""
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for d in yaml.safe_load_all((DEPLOY / "k8s" / "dagster-ui-proxy.yaml").read_text())
    }
    for doc in docs.values():
        _validate_k8s(doc)
    config = docs[("ConfigMap", "dagster-ui-proxy-config")]["data"]["oauth2-proxy.cfg"]
    assert config == (DEPLOY / "oauth2-proxy" / "oauth2-proxy.cfg").read_text()
    proxy = docs[("Deployment", "dagster-ui-proxy")]
    pod = proxy["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ensure = (DEPLOY.parent / "scripts" / "ensure_oauth2_proxy.sh").read_text()
    assert f"VERSION={container['image'].rsplit(':', 1)[1]} " in ensure
    args = container["args"]
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    webserver = values["dagsterWebserver"]
    assert webserver["service"]["type"] == "ClusterIP"
    assert values["ingress"]["enabled"] is False
    # release "dagster" in namespace mlops (the install line at the top of values.yaml)
    port = webserver["service"]["port"]
    upstream = f"--upstream=http://dagster-dagster-webserver.mlops.svc.cluster.local:{port}/"
    assert upstream in args
    assert "--config=/etc/oauth2-proxy/oauth2-proxy.cfg" in args
    assert any(a.startswith("--redirect-url=https://") for a in args)
    assert not any(a.startswith(("--client-secret=", "--cookie-secret=")) for a in args)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    secrets = volumes[mounts["/etc/oauth2-proxy/secrets"]["name"]]["secret"]
    assert secrets["secretName"] == "dagster-ui-proxy"
    assert volumes[mounts["/etc/oauth2-proxy/oauth2-proxy.cfg"]["name"]]["configMap"] == {
        "name": "dagster-ui-proxy-config"
    }
    for line in config.splitlines():  # the files the config reads are the mounted Secret's
        if line.startswith(("client_secret_file", "cookie_secret_file")):
            assert line.split("=", 1)[1].strip().strip('"').startswith("/etc/oauth2-proxy/secrets/")
    # the Ingress sends everything to the proxy's Service
    service = docs[("Service", "dagster-ui-proxy")]
    assert service["spec"]["selector"] == proxy["spec"]["selector"]["matchLabels"]
    ingress = docs[("Ingress", "dagster-ui")]
    backends = [
        path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == ["dagster-ui-proxy"]
    assert ingress["spec"]["tls"]
    # only the proxy's pods reach the webserver's pods (the chart's labels), on its port
    policy = docs[("NetworkPolicy", "dagster-webserver-only-from-ui-proxy")]["spec"]
    assert policy["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "dagster",
        "component": "dagster-webserver",
    }
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    labels = pod["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"].items() <= labels.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]


def test_the_hardening_rule_flags_a_weak_container() -> None:
    weak = {
        "kind": "Pod",
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 0},
            "containers": [
                {
                    "name": "c",
                    "securityContext": {"readOnlyRootFilesystem": False},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
        },
    }
    assert _hardening_problems(weak) == [
        "c: no non-zero runAsUser",
        "c: allowPrivilegeEscalation is not false",
        "c: capabilities do not drop ALL",
        "c: readOnlyRootFilesystem is not true",
        "c: mounts undeclared volume tmp",
    ]
